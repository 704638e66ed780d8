"""Insurance settlement (三重保障 一站式结算): the three payers and fund supervision."""
