"""Provisioning a federation: the CA's folder, participants' kits, revocations."""

from __future__ import annotations

import datetime
import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sdk.wire import normalize_address

from .authority import Authority, cert_pem, key_pem, utcnow
from .identity import USER_ROLES, TrustError, check_name, printable_name
from .kit import CA_FILE, CERT_FILE, CRL_FILE, KEY_FILE, TOML_FILE
from .verify import crl_number, load_crl

FEDERATION_FILE, REGISTRY_FILE, CA_KEY_FILE = "federation.toml", "issued.json", "ca.key"
CRL_DAYS = 30
COORDINATOR = "coordinator"  # the coordinator kit's name and folder
# Why a name cannot be given to a new participant:
RESERVED = "reserved for the coordinator's kit"
ISSUED = "already issued to a participant"
REVOKED = "already issued to a participant whose certificate is revoked (names are never reused)"


def create_federation(
    out: Path,
    coordinators: list[str],
    workers: Iterable[str],
    users: Iterable[tuple[str, str]],
    valid_days: int = 365,
) -> list[Path]:
    """A new CA in `out`/ca and the kits of the coordinator (reachable at `coordinators`, the
    first being every kit's default), `workers` and `users` (name, role); the kits' folders."""
    out = Path(out)
    ca_dir = out / "ca"
    if ca_dir.exists():
        raise ValueError(
            f"{ca_dir} already exists: add participants with "
            f"`deltaflow provision add --ca {ca_dir}`, or choose another --out"
        )
    addresses = [normalize_address(address) for address in coordinators]
    if not addresses:
        raise ValueError("name the coordinator's address with --coordinator HOST:PORT")
    _check_valid_days(valid_days)
    plan = _plan(workers, users, taken={COORDINATOR: RESERVED})
    plan.insert(0, (COORDINATOR, COORDINATOR))
    _check_free(out, plan)

    authority = Authority.create(valid_days)
    out.mkdir(parents=True, exist_ok=True)
    _make_dir(ca_dir)
    _write(ca_dir / CA_FILE, cert_pem(authority.certificate))
    _write(ca_dir / CA_KEY_FILE, key_pem(authority.key), private=True)
    _write(ca_dir / FEDERATION_FILE, (
        "# Written by `deltaflow provision`; `deltaflow provision add` reads it.\n"
        f"coordinators = {json.dumps(addresses)}\n"
        f"valid_days = {valid_days}\n"
    ).encode())
    _write(ca_dir / REGISTRY_FILE, b"[]\n")
    crl = _crl_pem(authority, [], number=1)
    _write(ca_dir / CRL_FILE, crl)
    hosts = [address.rpartition(":")[0] for address in addresses]
    return _issue_kits(ca_dir, authority, out, plan, addresses[0], hosts, valid_days, crl)


def add_participants(
    ca_dir: Path,
    out: Path | None,
    workers: Iterable[str],
    users: Iterable[tuple[str, str]],
    valid_days: int | None = None,
) -> list[Path]:
    """Kits for new `workers` and `users` from the CA in `ca_dir`, under `out` (default: the
    folder that holds `ca_dir`); the kits' folders."""
    ca_dir = Path(ca_dir)
    authority = Authority.load(ca_dir)
    federation = _federation(ca_dir)
    valid_days = federation["valid_days"] if valid_days is None else valid_days
    _check_valid_days(valid_days)
    taken = {COORDINATOR: RESERVED} | {
        entry["name"]: REVOKED if entry["revoked"] else ISSUED for entry in _registry(ca_dir)
    }
    plan = _plan(workers, users, taken)
    if not plan:
        raise ValueError("name the participants to add with --workers and/or --users")
    out = ca_dir.parent if out is None else Path(out)
    _check_free(out, plan)
    return _issue_kits(
        ca_dir, authority, out, plan, federation["coordinators"][0], [], valid_days, None
    )


def revoke(ca_dir: Path, name: str) -> list[Path]:
    """Revoke every certificate issued to `name`: a new revocation list in `ca_dir` and in the
    coordinator's kit beside it, if there is one; the files written."""
    ca_dir = Path(ca_dir)
    authority = Authority.load(ca_dir)
    entries = _registry(ca_dir)
    mine = [entry for entry in entries if entry["name"] == name]
    if not mine:
        raise ValueError(f"no participant named {printable_name(name)} was issued by this CA")
    now = utcnow().isoformat(timespec="seconds")
    for entry in mine:
        if not entry["revoked"]:
            entry["revoked"], entry["revoked_at"] = True, now
    _replace(ca_dir / REGISTRY_FILE, _registry_bytes(entries))
    return _publish_crl(ca_dir, authority, entries, CRL_DAYS)


def refresh_crl(ca_dir: Path, days: int = CRL_DAYS) -> list[Path]:
    """Re-sign the same revocations with a new number, valid `days` more; the files written."""
    ca_dir = Path(ca_dir)
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    return _publish_crl(ca_dir, Authority.load(ca_dir), _registry(ca_dir), days)


def _plan(
    workers: Iterable[str], users: Iterable[tuple[str, str]], taken: dict[str, str]
) -> list[tuple[str, str]]:
    """(name, role) of each new participant, names checked and unique among themselves and
    against `taken` (name: why it is taken)."""
    plan = [(name, "worker") for name in workers]
    for name, role in users:
        if role not in USER_ROLES:
            raise ValueError(
                f"user {printable_name(name)} has the role {role!r}: a user is admin or analyst"
            )
        plan.append((name, role))
    seen: set[str] = set()
    for name, _ in plan:
        check_name(name)
        if name in taken:
            raise ValueError(f"the name {name} is {taken[name]}: choose another name")
        if name in seen:
            raise ValueError(f"the name {name} is given twice: every participant's name is its own")
        seen.add(name)
    return plan


def _kit_folder(out: Path, name: str, role: str) -> Path:
    if role == COORDINATOR:
        return out / COORDINATOR
    return out / ("workers" if role == "worker" else "users") / name


def _check_free(out: Path, plan: list[tuple[str, str]]) -> None:
    for name, role in plan:
        if (folder := _kit_folder(out, name, role)).exists():
            raise ValueError(f"{folder} already exists: choose another --out or remove it")


def _issue_kits(
    ca_dir: Path,
    authority: Authority,
    out: Path,
    plan: list[tuple[str, str]],
    coordinator: str,
    hosts: list[str],
    valid_days: int,
    crl: bytes | None,
) -> list[Path]:
    """Issue a certificate per planned participant, record them all, then write their kits
    (recorded first: a certificate that exists can always be revoked)."""
    issued = [(name, role, *authority.issue(name, role, hosts, valid_days)) for name, role in plan]
    entries = _registry(ca_dir) + [_entry(name, role, cert) for name, role, cert, _ in issued]
    _replace(ca_dir / REGISTRY_FILE, _registry_bytes(entries))
    folders = []
    for name, role, cert, key in issued:
        folder = _kit_folder(out, name, role)
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_dir(folder)
        _write(folder / CA_FILE, cert_pem(authority.certificate))
        _write(folder / CERT_FILE, cert_pem(cert))
        _write(folder / KEY_FILE, key_pem(key), private=True)
        _write(folder / TOML_FILE, (
            f"name = {json.dumps(name)}\nrole = {json.dumps(role)}\n"
            f"coordinator = {json.dumps(coordinator)}\n"
        ).encode())
        if role == COORDINATOR and crl is not None:
            _write(folder / CRL_FILE, crl)
        folders.append(folder)
    return folders


def _publish_crl(ca_dir: Path, authority: Authority, entries: list[dict], days: int) -> list[Path]:
    """A new CRL, numbered one past the current, in `ca_dir` and the coordinator's kit beside it."""
    number = crl_number(load_crl(_read(ca_dir / CRL_FILE))) + 1
    crl = _crl_pem(authority, [entry for entry in entries if entry["revoked"]], number, days)
    targets = [ca_dir / CRL_FILE]
    if (ca_dir.parent / COORDINATOR / TOML_FILE).is_file():
        targets.append(ca_dir.parent / COORDINATOR / CRL_FILE)
    for target in targets:
        _replace(target, crl)
    return targets


def _crl_pem(authority: Authority, revoked: list[dict], number: int, days: int = CRL_DAYS) -> bytes:
    listed = [
        (int(entry["serial"]), datetime.datetime.fromisoformat(entry["revoked_at"]))
        for entry in revoked
    ]
    return authority.revocation_list(number, listed, days).public_bytes(Encoding.PEM)


def _entry(name: str, role: str, cert: x509.Certificate) -> dict:
    return {
        "name": name,
        "role": role,
        "serial": str(cert.serial_number),  # a 159-bit number: a string survives any JSON reader
        "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
        "revoked": False,
        "revoked_at": None,
    }


def _registry(ca_dir: Path) -> list[dict]:
    try:
        return json.loads(_read(ca_dir / REGISTRY_FILE))
    except json.JSONDecodeError:
        raise TrustError(
            f"{ca_dir / REGISTRY_FILE} is not valid JSON: restore it from a backup"
        ) from None


def _registry_bytes(entries: list[dict]) -> bytes:
    return (json.dumps(entries, indent=2) + "\n").encode()


def _federation(ca_dir: Path) -> dict:
    path = ca_dir / FEDERATION_FILE
    try:
        settings = tomllib.loads(_read(path).decode())
        return {
            "coordinators": list(settings["coordinators"]),
            "valid_days": int(settings["valid_days"]),
        }
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, IndexError):
        raise TrustError(f"{path} is not as `deltaflow provision` wrote it: restore it") from None


def _check_valid_days(days: int) -> None:
    if days < 1:
        raise ValueError(f"--valid-days must be at least 1, not {days}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustError(
            f"{path} is missing: --ca must name the ca folder `deltaflow provision` wrote"
        ) from None


def _make_dir(path: Path) -> None:
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # whatever the umask


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """A new file (never an existing one), 0600 when `private`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    _write(temporary, data)
    os.replace(temporary, path)
