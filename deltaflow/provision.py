"""`deltaflow provision`: a federation's CA and kits, new participants, revocations, the CRL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdk.trust import TrustError, add_participants, create_federation, refresh_crl, revoke
from sdk.trust.verify import format_time, load_crl

USAGE = """%(prog)s --out DIR --coordinator HOST:PORT [--coordinator HOST:PORT ...]
           [--workers NAME[,NAME...]] [--users NAME:ROLE[,NAME:ROLE...]] [--valid-days N]
       %(prog)s add --ca DIR/ca [--out DIR] [--workers ...] [--users ...] [--valid-days N]
       %(prog)s revoke --ca DIR/ca NAME
       %(prog)s crl --ca DIR/ca [--days N]"""

HINT = (
    "copy each kit to its holder: coordinator/ to the coordinator's machine, workers/NAME to the "
    "data holder NAME, users/NAME to the user NAME; keep ca/ (with ca.key) offline, with whoever "
    "admits and revokes participants"
)


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _participant_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_names, action="extend", default=[],
                        metavar="NAME[,NAME...]", help="workers (data holders) to issue kits to")
    parser.add_argument("--users", type=_names, action="extend", default=[],
                        metavar="NAME:ROLE[,...]",
                        help="users to issue kits to; ROLE is admin or analyst")
    parser.add_argument("--valid-days", type=int, metavar="N",
                        help="days the certificates are valid "
                             "(default 365; for add, the federation's)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.description = (
        "Make a federation's certificate authority and every participant's kit (ca.crt, tls.crt, "
        "tls.key, kit.toml), add participants later, revoke one, or renew the revocation list."
    )
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder to write ca/ and the kits in")
    parser.add_argument("--coordinator", dest="coordinators", action="append", default=[],
                        metavar="HOST:PORT",
                        help="the coordinator's address (the first is the kits' default)")
    _participant_arguments(parser)
    actions = parser.add_subparsers(dest="action", metavar="{add,revoke,crl}", prog=parser.prog)
    add = actions.add_parser("add", help="issue kits to new participants from an existing CA")
    add.add_argument("--out", type=Path, metavar="DIR",
                     help="folder for the kits (default: the CA's parent)")
    _participant_arguments(add)
    revoke_parser = actions.add_parser("revoke", help="revoke a participant's certificate")
    revoke_parser.add_argument("name", help="the participant to revoke")
    crl = actions.add_parser("crl", help="renew the revocation list before its next update")
    crl.add_argument("--days", type=int, default=30, metavar="N",
                     help="days until its next update (default 30)")
    for action in (add, revoke_parser, crl):
        action.add_argument("--ca", type=Path, required=True, metavar="DIR/ca",
                            help="the CA's folder")


def run(args: argparse.Namespace) -> int:
    """Do the provisioning asked for; 2 with one sentence on stderr when it cannot be done."""
    try:
        if args.action == "revoke":
            _report_crl(revoke(args.ca, args.name), f"revoked {args.name}")
        elif args.action == "crl":
            _report_crl(refresh_crl(args.ca, args.days), "renewed the revocation list")
        elif args.action == "add":
            users = _users(args.users)
            _report_kits(add_participants(args.ca, args.out, args.workers, users, args.valid_days))
        else:
            if args.out is None or not args.coordinators:
                raise ValueError("a new federation needs --out DIR and --coordinator HOST:PORT")
            users = _users(args.users)
            valid_days = 365 if args.valid_days is None else args.valid_days
            kits = create_federation(args.out, args.coordinators, args.workers, users, valid_days)
            print(f"wrote {args.out / 'ca'}  (the CA: ca.key stays here, in no kit)")
            _report_kits(kits)
    except (ValueError, TrustError) as error:
        print(f"deltaflow provision: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"deltaflow provision: {error}", file=sys.stderr)
        return 1
    return 0


def _users(specs: list[str]) -> list[tuple[str, str]]:
    users = []
    for spec in specs:
        name, colon, role = spec.partition(":")
        if not colon:
            raise ValueError(f"--users takes NAME:ROLE (ROLE admin or analyst), not {spec!r}")
        users.append((name, role))
    return users


def _report_kits(kits: list[Path]) -> None:
    for kit in kits:
        print(f"wrote {kit}")
    print(HINT)


def _report_crl(paths: list[Path], what: str) -> None:
    until = format_time(load_crl(paths[0].read_bytes()).next_update_utc.timestamp())
    print(f"{what}: wrote {', '.join(map(str, paths))} (next update due {until})")
    if len(paths) == 1:
        print("copy revoked.crl to the coordinator's kit")
