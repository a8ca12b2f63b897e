-- The history page filters a pipeline's executions by status or by trigger type and
-- pages by seq (keyset). An index per filter that ends in seq makes every page a range
-- scan of the rows it returns, however long the history (see BENCHMARKS.md).
CREATE INDEX executions_by_pipeline_status ON executions(pipeline_name, status, seq);
CREATE INDEX executions_by_pipeline_trigger ON executions(pipeline_name, trigger_type, seq);
-- All pipelines by status: (status, seq) does everything (status) did, and pages.
DROP INDEX executions_by_status;
CREATE INDEX executions_by_status_seq ON executions(status, seq);
