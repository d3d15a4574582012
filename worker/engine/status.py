"""TaskStatus: the states of a task, as in Fedflow."""

from enum import Enum


class TaskStatus(Enum):
    """Where a task is in its life.

    INIT -> AVAILABLE (subprocess started) -> LOADING -> WAITING (loaded, waiting for a device)
    -> TRAINING -> FINISHED. A failure in either stage, or a subprocess that dies, is EXCEPTION;
    a CUDA out-of-memory error in train is INTERRUPT until the task is retried; a task whose
    subprocess was stopped before it finished is EXITED.
    """

    INIT = "INIT"
    AVAILABLE = "AVAILABLE"
    LOADING = "LOADING"
    WAITING = "WAITING"
    TRAINING = "TRAINING"
    FINISHED = "FINISHED"
    EXITED = "EXITED"
    EXCEPTION = "EXCEPTION"
    INTERRUPT = "INTERRUPT"
