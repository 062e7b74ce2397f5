"""What runs inside ``fit``: callbacks, weight averaging, throughput, the DDP strategies, the Optuna trial reporter."""
