"""Task classes the tests submit."""

from sdk import dataset
from sdk.task import HorizontalAnalytics


class WageAvg(HorizontalAnalytics):
    def __init__(self, min_clients=2, max_clients=3, wait_timeout=30, connection_timeout=30,
                 file="wages.csv"):
        super().__init__(name="wage_avg", min_clients=min_clients, max_clients=max_clients,
                         wait_timeout=wait_timeout, connection_timeout=connection_timeout)
        self.file = file

    def dataset(self):
        return {"wages": dataset.DataFrame(self.file)}

    def execute(self, wages):
        return wages.mean()


class Rows(HorizontalAnalytics):
    def __init__(self, body):
        super().__init__(name="rows", min_clients=2, max_clients=2, wait_timeout=1,
                         connection_timeout=1)
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("d.csv")}

    def execute(self, d):
        return self.body(d)
