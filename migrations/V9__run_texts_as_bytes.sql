-- A run's final answer and error are what the model and the CLI said, and
-- may hold a NUL, which a text column refuses ("invalid byte sequence"):
-- the run then could not be recorded as ended. They are kept as the UTF-8
-- bytes of the text instead, every character included.
ALTER TABLE runs
    ALTER COLUMN final_response TYPE bytea USING convert_to(final_response, 'UTF8'),
    ALTER COLUMN error TYPE bytea USING convert_to(error, 'UTF8');
