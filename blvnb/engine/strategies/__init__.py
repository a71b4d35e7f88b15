STRATEGIES = {"uda": "blvnb.engine.strategies.uda:build"}  # the one line of worker uda: add it to core's dict
