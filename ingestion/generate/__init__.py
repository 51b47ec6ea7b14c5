"""Sample partner deliveries for Jisr: ``generate()`` (the ``jisr generate`` command).

>>> from ingestion.generate import generate
>>> summary = generate(Path("var/landing"), beneficiaries=5000, seed=42, months=12,
...                    truth_path=Path("var/generated/ground_truth.json"))

What is written
---------------
``landing_dir/<partner>/<file>`` for every contract source. File names, headers
(``Column.header``), delimiter, decimal mark, date format, encoding and format all come
from ``contracts/*.yml``; nothing here restates a header list.

* ``msisf`` (CSV ``;``, decimal comma, ``dd/mm/yyyy``, windows-1252, CRLF): the programme
  catalogue (month 1 only, never dirty); ``registre_YYYY-MM`` (month 1 = the full registry,
  later months = new registrations, about 1% of the population, and changed records, about
  0.5%: household score updates, household moves, people leaving to found a household);
  ``inscriptions_YYYY-MM`` (month 1 = every live enrolment; later months = entries and exits,
  an exit arriving as an updated row of the same enrolment_id); ``paiements_YYYY-MM`` (one
  payment per cash enrolment live in the month: entry on or before the month's last day and
  no exit before its first day). Arabic names cannot be encoded in windows-1252: those
  columns are left empty in these files (listed in the truth's ``blank_columns``).
* ``cdg_finance`` (JSON lines): ``loans_YYYY-MM`` (month 1 = the loans live at the start plus
  the month's disbursements; later months = new loans and loans that closed or were written
  off) and ``repayments_YYYY-MM`` (instalments due in the month with their payment when
  paid in time; late payments of earlier instalments as updated lines in the month paid).
  About 80% of loans pay on time, 14% pay late by 1-3 months, 6-10% default and are written
  off 180 days after the first missed instalment: PAR30 ends around 5%.
* ``cdg_incubation`` (xlsx, sheet ``ventures``): semi-annual cohorts (A = January,
  B = July); status, jobs and revenue appear at 12 and 24 months.
* ``eps`` (CSV ``;``, UTF-8 with BOM): establishments (``max(24, N/3000)``, month 1 in full,
  later rows when works start or end; about a third are modernised, with occupancy falling
  during works and capacity and occupancy rising after) and monthly occupancy.
* ``digital`` (JSON lines, ISO-8601 UTC timestamps): requests submitted in the month with
  their status at month end, plus earlier requests closed during the month; the counter's
  share falls month after month while mobile and web grow.
* ``surveys`` (CSV ``,`` UTF-8): ``<study>_units.csv`` and ``<study>_measurements.csv`` for
  three studies with planted effects (see :mod:`ingestion.generate.surveys`).

Determinism: the same arguments give byte-identical files (xlsx included). Month ``m``
depends only on (seed, beneficiaries, m) and the months before it, never on ``months``, so
``months=13`` rewrites months 1..12 byte for byte and adds month 13. Survey files and the
catalogue do not depend on ``months`` either. Memory stays bounded: rows are rendered and
written in chunks of 100,000 with numpy (1,000,000 beneficiaries: about 7.9M rows, 0.9 GB,
peak RSS about 0.6 GB).

Dirty rows (``dirty_rate``): each chunk of ``n`` rows receives ``Binomial(n, dirty_rate)``
extra rows breaking exactly one row rule (see :mod:`ingestion.generate.dirty`); the clean
rows are byte-identical to a ``dirty_rate=0`` run. Programmes and surveys are never dirty.

Ground truth (``truth_path``, JSON, written outside the landing area)
--------------------------------------------------------------------
``version``        format version (1)
``parameters``     beneficiaries, seed, months, start_month, last_month, dirty_rate
``files``          ``{"<partner>/<file>": data rows}`` (header not counted, dirty rows included)
``bytes``          ``{"<partner>/<file>": size in bytes}``
``blank_columns``  ``["<source>.<column>", ...]`` left empty because the encoding cannot carry them
``dirty_rows``     ``[{"file": "<partner>/<file>", "source", "row": 1-based data row,
                   "rule": quarantine rule name}]``: ``required:<col>``, ``type:<col>``,
                   ``pattern:<col>``, ``allowed:<col>``, ``min:<col>``, ``max:<col>``,
                   ``references:<col>``, ``rule:<name>`` or ``duplicate_key`` (every row
                   sharing the key is listed). Each listed row fails that rule and no other.
``monthly``        ``{"YYYY-MM": {"payments": {"rows", "amount_mad",
                   "amount_mad_by_programme"}, "service_requests": {"submitted",
                   "by_channel", "open_at_month_end"}}}`` over clean rows
``studies``        per study: programme_code, design (``randomised`` |
                   ``cluster_randomised`` | ``selection_on_observables``), assignment,
                   clustered, cluster_variable, n_clusters, selection_on_observables,
                   selection_covariates, covariates_round0, rounds (index, label, date),
                   pre_rounds, post_rounds, endline_round, planted_effects
                   ``{outcome: effect}`` (constant over post rounds, on the outcome's
                   scale; probability scale for 0/1 outcomes), effect_rounds,
                   attrition_rate_planned, attrition_endline (units with empty endline
                   values per group), n_units, n_treated, n_linked_to_registry, unit_type
``aggregates``     independent figures for testing marts, all as of the last month and over
                   clean rows: registered_people, registered_people_by_region_sex
                   ``{region: {"F": n, "M": n}}`` (latest record per person),
                   active_enrolments_by_programme (no exit yet), enrolments_total,
                   payments_mad_by_month, loans_total, portfolio_last_month (active_loans,
                   outstanding_principal_mad, par30_outstanding_mad, par30,
                   written_off_loans_to_date, written_off_mad_to_date), establishments,
                   establishments_modernised_by_last_month, residents_last_month,
                   ventures_total, ventures_status_12m
"""

from ingestion.generate.core import GenerationSummary, generate

__all__ = ["GenerationSummary", "generate"]
