STRATEGIES = {"mean-teacher": __import__("blvnb.engine.strategies.mean_teacher", fromlist=["build"]).build}
