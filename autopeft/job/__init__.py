"""The job: the job file validated into typed objects, and the task data it names."""
