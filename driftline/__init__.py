"""driftline: streaming monitor for ML models in production."""
