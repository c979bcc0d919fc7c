"""Protocol-level fakes of the services the tests cannot run locally: Cloud KMS, the Graph API."""
