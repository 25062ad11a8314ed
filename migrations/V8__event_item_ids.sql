-- The item an `item.delta` or `item.completed` event belongs to, taken from
-- its JSON by the backend as it stores it. A replay leaves out the deltas
-- of completed items by this column: casting `data` to jsonb there failed
-- on text Postgres's jsonb refuses (`\u0000`, a lone surrogate), and the
-- whole replay with it.
ALTER TABLE run_events ADD COLUMN item_id text;

-- Rows stored before: those jsonb can read. The others keep no item id, so
-- their deltas are replayed too (each once, in order), never lost.
UPDATE run_events
   SET item_id = CASE event_type
                   WHEN 'item.delta' THEN data::jsonb ->> 'itemId'
                   ELSE data::jsonb -> 'item' ->> 'id'
                 END
 WHERE event_type IN ('item.delta', 'item.completed')
   AND data !~* '\\u(0000|d[89a-f][0-9a-f][0-9a-f])';
