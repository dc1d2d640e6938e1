"""Entry scripts shared by every contender: each module has ``init()`` and ``run(mini_batch)``."""
