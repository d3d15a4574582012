"""A task's end releases the workers it concerns and no other: those it selected and did not
drop, and those that came back holding its job while it ran. Over a real coordinator, with
hand-written workers that count what they receive."""

from __future__ import annotations

from cluster import LocalCluster, wait_for
from hand_worker import HandWorker
from sdk.proto import services_pb2 as pb
from tasks import WageAvg


class Holder(HandWorker):
    """Never answers; keeps the tasks it was assigned and those it was released from."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assigned: list[int] = []
        self.releases: list[int] = []

    def answer(self, assignment: pb.Assignment) -> None:
        self.assigned.append(assignment.task_id)

    def released(self, task_id: int) -> None:
        self.releases.append(task_id)


def test_a_task_s_end_releases_its_workers_and_one_back_with_its_job_but_no_other(tmp_path):
    with LocalCluster(tmp_path) as cluster:
        cluster.start_coordinator(0, "--heartbeat-interval", "0.2", "--heartbeat-timeout", "5")
        a, b = Holder(cluster, "a", ["wages.csv"]), Holder(cluster, "b", ["wages.csv"])
        outsider = Holder(cluster, "outsider", ["other.csv"])  # never eligible
        workers = [a, b, outsider]
        for worker in workers:
            worker.start()
        admin, alice = cluster.client("root"), cluster.client("alice")
        try:
            wait_for(lambda: len(admin.list_workers()) == 3, what="the workers")
            task_id = alice.create_task(WageAvg(wait_timeout=60, connection_timeout=60).build())
            wait_for(lambda: task_id in a.assigned and task_id in b.assigned, what="assignments")

            # b's connection breaks mid-task; it comes back holding the task's job.
            b.channel.close()
            wait_for(lambda: "worker b dropped" in cluster.coordinator.log(), what="b dropped")
            back = Holder(cluster, "b", ["wages.csv"], held_tasks=[task_id],
                          coordinator_id=a.coordinator_id)
            workers.append(back)
            back.start()
            wait_for(lambda: len(admin.list_workers()) == 3, what="b back")
            assert back.release_tasks == []  # running: its job is kept until the task ends

            alice.cancel_task(task_id)
            wait_for(lambda: a.releases and back.releases, what="the releases")
            assert a.releases == back.releases == [task_id]
            # A heartbeat sent after the releases comes after any release in its channel.
            seen = outsider.heartbeats
            wait_for(lambda: outsider.heartbeats >= seen + 2, what="outsider's heartbeats")
            assert outsider.releases == []
        finally:
            for worker in workers:
                worker.done.set()
