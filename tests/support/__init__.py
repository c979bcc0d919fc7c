"""What the tests and benches share: the test stack's settings, fakes of outside services,
servers, sample records, and the steps a patient or a provider takes.

Test modules and conftest files import from here; nothing here imports a test module or a
conftest, and the production code never imports it.
"""
