"""Quality gates, plain Python (no Dagster): Great Expectations suites generated from the
data contracts (``expectations``), audit checks over the warehouse (``checks``), their
configuration (``config``, ``config/quality.yml``), the HTML quality report of a refresh
(``report``) and disclosure control of the published cells (``disclosure``)."""
