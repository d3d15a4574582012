"""Task classes for the engine tests; a module of its own so that subprocesses can import it."""

import ctypes
import os
import signal
import time

from worker.engine import Task


class EchoTask(Task):
    """Loads a value, then returns where and how it ran."""

    def load(self):
        start = time.time()
        self.loads = getattr(self, "loads", 0) + 1
        self.loaded_pid = os.getpid()
        self.load_window = (start, time.time())

    def train(self, device):
        self.trains = getattr(self, "trains", 0) + 1
        return {"task_id": self.task_id, "device": device, "attr_device": self.device,
                "cwd": os.getcwd(), "pid": os.getpid(), "loaded_pid": self.loaded_pid,
                "loads": self.loads, "trains": self.trains, "round_input": self.round_input,
                "load_window": self.load_window}


class SlowTask(EchoTask):
    """Takes ``seconds`` in load and in train, and says when train ran."""

    def __init__(self, task_id, seconds=0.2, **kwargs):
        super().__init__(task_id, **kwargs)
        self.seconds = seconds

    def load(self):
        start = time.time()
        time.sleep(self.seconds)
        super().load()
        self.load_window = (start, time.time())

    def train(self, device):
        start = time.time()
        time.sleep(self.seconds)
        return {**super().train(device), "window": (start, time.time())}


class FailingTask(Task):
    """Raises in ``stage``."""

    def __init__(self, task_id, stage, **kwargs):
        super().__init__(task_id, **kwargs)
        self.stage = stage

    def load(self):
        if self.stage == "load":
            raise ValueError(f"boom in load of {self.task_id}")

    def train(self, device):
        if self.stage == "train":
            raise ValueError(f"boom in train of {self.task_id}")
        return {"ok": True}


class HangingTask(Task):
    """Writes its pid to ``pid_file`` in train, then waits forever."""

    def __init__(self, task_id, pid_file, **kwargs):
        super().__init__(task_id, **kwargs)
        self.pid_file = pid_file

    def load(self):
        pass

    def train(self, device):
        with open(self.pid_file + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.rename(self.pid_file + ".tmp", self.pid_file)
        signal.pause()


class CrashingTask(Task):
    """Dies in ``stage``: "segfault" in train, or exits with code 3 in load."""

    def __init__(self, task_id, how, **kwargs):
        super().__init__(task_id, **kwargs)
        self.how = how

    def load(self):
        if self.how == "exit":
            print("about to exit", flush=True)
            os._exit(3)

    def train(self, device):
        ctypes.string_at(0)


class OomTask(EchoTask):
    """Raises torch.cuda.OutOfMemoryError the first time it trains on each device in ``oom_on``
    ("all": every device, every time)."""

    def __init__(self, task_id, oom_on=("cuda:0",), **kwargs):
        super().__init__(task_id, **kwargs)
        self.oom_on = oom_on
        self.seen = set()

    def train(self, device):
        import torch

        if self.oom_on == "all" or (device in self.oom_on and device not in self.seen):
            self.seen.add(device)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory on {device} (simulated)")
        return super().train(device)


class BadResultTask(Task):
    """Returns something that is not a dict."""

    def load(self):
        pass

    def train(self, device):
        return [1, 2, 3]


class LoadOomTask(EchoTask):
    """Runs out of CUDA memory while loading: an error, never a reason to train."""

    def load(self):
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory while loading (simulated)")


class LaterOomTask(EchoTask):
    """Runs out of CUDA memory on ``oom_device`` when its round input says so."""

    def __init__(self, task_id, oom_device="cuda:0", **kwargs):
        super().__init__(task_id, **kwargs)
        self.oom_device = oom_device

    def train(self, device):
        import torch

        if self.round_input == "oom" and device == self.oom_device:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory on {device} (simulated)")
        return super().train(device)


class OddResultTask(EchoTask):
    """Returns a dict whose keys JSON cannot take, as numpy code often does."""

    def train(self, device):
        import numpy as np

        return {np.int64(1): 2, "nested": {(1, 2): "pair"}}


def _only_in(pid):
    import os

    if os.getpid() != pid:
        raise RuntimeError("this object cannot be rebuilt outside the process that made it")


class _Unrebuildable:
    def __reduce__(self):
        import os

        return _only_in, (os.getpid(),)


class UnrebuildableResultTask(EchoTask):
    """Returns what pickles in its subprocess but cannot be rebuilt in the parent."""

    def train(self, device):
        return {"thing": _Unrebuildable()}


class GrandchildTask(EchoTask):
    """Starts a process of its own in train, as DataLoader workers or tools would."""

    def __init__(self, task_id, pid_file, **kwargs):
        super().__init__(task_id, **kwargs)
        self.pid_file = pid_file

    def train(self, device):
        import subprocess

        helper = subprocess.Popen(["sleep", "60"])
        with open(self.pid_file, "w") as handle:
            handle.write(str(helper.pid))
        return super().train(device)
