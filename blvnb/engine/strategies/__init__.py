STRATEGIES = {"mean-teacher": "blvnb.engine.strategies.mean_teacher:build"}  # one entry of STRATEGIES (worker core writes the rest)
