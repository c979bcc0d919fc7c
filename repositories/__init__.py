"""All Firestore and Cloud Storage access. Nothing outside this package imports google.cloud."""
