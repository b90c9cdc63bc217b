"""alpa-plan's planner: graph import, sharding strategies, the intra-op ILP, the inter-op DP."""

__version__ = "0.1.0"
