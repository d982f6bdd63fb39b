-- `pom impact`: the runs a file fed.
CREATE INDEX run_inputs_by_submission ON run_inputs(submission);
