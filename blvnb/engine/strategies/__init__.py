STRATEGIES = {"uda": "blvnb.engine.strategies.uda"}  # uda: build(cfg, data); core merges its entries here
