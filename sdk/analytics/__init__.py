"""Analytics tasks as data: the operation graph, its evaluation with pandas, and its stages."""

from sdk.analytics import stats as _stats  # noqa: F401 - registers its reductions with ops
