"""The intake conversation engine: pure, so it is tested without any I/O.

`engine.advance(questionnaire, state, inbound, now, new_record_id) -> Step` turns one patient
message into the next state, the replies to send and the effects to carry out; the caller
saves, sends and acts. The form is data (questionnaire_v1.json, read by questionnaire.py), the
words are data (messages_en.json, messages_es.json, read by catalog.py). Nothing here reads the
clock, the environment or the network, or draws random numbers.

Behaviour choices:
- Button and row ids are "<step>:<choice>", so a tap on an old message's button is told apart
  from an answer to the current question: it gets the current question asked again. A button
  whose id is not ours (a template quick reply) is read as a command by its id or title, and
  otherwise starts the form for a patient who has none under way.
- A typed word that picks one of the current question's choices is an answer even when it is
  also a command; otherwise commands win over answers.
- Until a language is chosen every message is given in English and then Spanish; buttons,
  which have room for one language, are in English.
- "restart" starts a new form at the welcome and the language buttons, with a new draft record
  id and `invalid_answers` back to 0; consent is asked again because it belongs to a form. The
  language already chosen is kept for the wording, as are the ids of completed records. The
  same happens when an opted-out, invited or new patient writes anything, and when a completed
  patient writes "restart".
- "back" from the first question says there is nothing before it and asks it again; "back"
  while editing from the summary (or from the list of answers) returns to the summary.
- "stop" and declining consent clear the draft (answers, consent time, draft id) but keep the
  language and the ids of completed records (no patient data), so "delete my data" still
  reaches the archived records later.
- Media and other unsupported messages under way get a short reply and leave the state
  untouched, `invalid_answers` included: they are not wrong answers, and counting them would
  send staff looking for a confusing question that does not exist. Wrong answers and stale
  taps do count.
- "delete my data" is confirmed with buttons; until the patient says yes or no, another command
  cancels the request and runs, anything else asks again (not counted as an invalid answer).
  Yes gives an "erase_records" effect (even with no record ids, so the caller can drop what
  else it holds) and a brand-new state; no returns to the question the patient was on.
- Confirm parses every stored answer again on the submission day (the age limit may have been
  crossed, or the draft may predate a rule) and archives the re-parsed values; if one fails,
  the patient is taken to that question and then straight back to the summary.
  `submitted_at` is `now`, but never earlier than `consent_at`.
- The summary lists the language too, and it can be edited like any labelled answer.
- "resume" (typed "continue"/"continuar", or the reminder template's quick-reply button, whose
  payload is "resume") asks the current question again, changing nothing; with no form under
  way it is any other first message. `remind` builds a free-form reminder: a friendly line and
  the current question again, buttons included (the summary gets the line on its own first).
- `invite` marks any patient with no form under way "invited" (including completed and
  opted-out ones: sending the template is the caller's decision) and leaves a form under way
  alone.
"""
