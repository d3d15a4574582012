"""Analytics tasks as data: the operation graph, its evaluation with pandas, and its stages."""
