"""What an operator watches the gateway through: JSON logs (logs.py), OpenTelemetry
traces (tracing.py) and the load balancer's probes /healthz and /readyz (probes.py).
The Prometheus metrics are proxy/metrics.py."""
