"""Pure domain types and rules shared by every capability: the intake record, who a patient
is (phone, BSUID, pseudonyms), the daily export password. No I/O, no clock, no environment."""
