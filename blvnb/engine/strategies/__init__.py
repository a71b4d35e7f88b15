STRATEGIES = {**globals().get("STRATEGIES", {}), "dars-rounds": __import__("blvnb.engine.strategies.dars_rounds", fromlist=["build"]).build}  # noqa: E501
STRATEGIES = {**globals().get("STRATEGIES", {}), "uda": "blvnb.engine.strategies.uda:build"}
