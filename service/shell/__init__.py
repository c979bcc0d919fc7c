"""The app shell: configuration, the app factory, wiring of clients (components), the
operator CLI, logging, readiness and test-only failpoints."""
