"""Pictures of the data: a self-contained HTML dataset report and an episode viewer (plotly, PyAV, rerun-sdk)."""
