"""The sweep: its plan of points, the runner that measures one, the executors that run them, the
tuner and the results table."""
