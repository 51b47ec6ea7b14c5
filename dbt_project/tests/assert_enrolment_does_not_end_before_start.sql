-- An enrolment cannot end before it starts.
select
    enrolment_id,
    entry_date,
    exit_date,
    _delivery_id

from {{ ref('fct_enrolments') }}
where exit_date < entry_date
