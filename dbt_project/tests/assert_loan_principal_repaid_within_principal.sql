{#- A loan never repays more principal than it lent, whatever its opening position was
    derived from (the interest of its first delivered instalment, its rate and term, or its
    instalments' principal). -#}
select loan_id, principal_mad, principal_repaid_mad, opening_principal_repaid_mad, _delivery_id
from {{ ref('fct_loans') }}
where principal_repaid_mad > principal_mad
   or opening_principal_repaid_mad < 0
   or outstanding_principal_mad < 0
