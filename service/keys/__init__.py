"""Key material: the Tink keyset and the Cloud KMS key that wraps it."""
