"""What work costs: partition prices, the cost of an attempt, institutions' monthly budgets."""
