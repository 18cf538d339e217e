"""Where sweep points run: one interface, implemented in this process, in an isolated worker, and
on a Dask cluster."""
