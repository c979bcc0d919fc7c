"""The intake service, in packages named by capability (see README, "Architecture").

`shell` builds and runs the app; `domain` is pure; `conversation`, `exports`, `archive` and
`accounts` are the use cases; `whatsapp` and `keys` are adapters to Meta and to Tink/KMS.
"""
