"""What every part runs on: configuration, Kafka clients and topics, the embedded broker, the
SQL store and its checkpoints, and the Prometheus metrics. Nothing here knows what a window or
a drift test is."""
