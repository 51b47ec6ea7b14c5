"""Impact evaluation stage: estimates, diagnostics and a report from the evaluation panel.

Plain Python (no dagster). Entry point: ``impact.run.run_impact(con_or_db_path,
config_path, run_id, code_version, report_dir)``; settings in ``config/evaluation.yml``
(``impact.config``); estimators in ``impact.estimators``; report in ``impact.report``;
published reference studies as survey deliveries in ``impact.reference_data``.
Importing the package loads neither statsmodels nor matplotlib.
"""
