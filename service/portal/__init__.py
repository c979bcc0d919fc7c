"""What the staff portal shows: dashboard figures, pages of intakes, invitations, and the
state of keys and accounts; each function reads only what its page needs."""
