"""Acceptance suite: the product started as the README runs it, checked only from outside.

Each module copies the product (``app.py``, ``wsgi.py``, ``gunicorn.conf.py``, ``jobflow/``, ``templates/``,
``static/``, ``deploy/``, ``.env.example``, requirements) into a temporary folder, writes a ``.env`` there and
runs the README's commands in that folder with the virtual environment's ``python``, ``flask`` and ``gunicorn``.
Short intervals come only from documented settings in ``.env``. What the tests read: HTTP answers, the mailbox
of a real SMTP server (aiosmtpd), documents through pymongo (the runbook's queries), exit codes and what the
processes print. The database is the session's SecantusDB server through ``MONGODB_URI`` except where the
embedded database is the point; the provider is the loopback OpenAI-compatible server
(``tests.support.openai_server``), so no model loads. Run: ``pytest tests/acceptance`` (marker ``acceptance``).

| README promise | test |
|---|---|
| the worker (thread of ``python app.py``) checks the alert rules every ``ALERT_CHECK_INTERVAL`` and emails when an alert opens, reminds every ``ALERT_REMINDER_INTERVAL``, emails once when it resolves: queue | ``test_all_in_one.py::test_a_backlog_over_the_threshold_opens_one_queue_alert_reminds_and_resolves_once_drained`` |
| the same for coverage (``ALERT_COVERAGE_MIN``, active jobs not embedded) | ``test_all_in_one.py::test_coverage_below_the_floor_alerts_while_jobs_wait_and_resolves_when_they_are_embedded`` |
| the same for failures in the last hour over ``ALERT_THRESHOLD_FAILURES`` (provider answering 400) | ``test_all_in_one.py::test_jobs_failing_for_good_open_one_failures_alert_with_a_reminder``, ``test_all_in_one.py::test_the_failures_alert_resolves_once_the_cause_is_fixed_and_the_items_retried`` |
| runbook: ``db.jobs.find({"embedding.retries": {"$gte": QUEUE_MAX_ATTEMPTS}})`` finds the jobs that failed for good | ``test_all_in_one.py::test_the_runbook_query_finds_the_jobs_that_failed_for_good`` |
| ``DELETE /api/jobs/<id>``: its queue items go with it | ``test_all_in_one.py::test_deleting_a_job_takes_its_queue_items_with_it`` |
| ``/metrics`` (token unless ``METRICS_PUBLIC``): the last minute's figures move while a backlog drains | ``test_all_in_one.py::test_metrics_last_minute_figures_move_while_a_backlog_drains`` |
| the worker writes a sample every minute (within about 10 s of its end, and the previous minute's at start) | ``test_all_in_one.py::test_the_worker_writes_a_sample_for_every_minute_that_ended`` |
| the overview (after ``create-admin`` and ``/login``) charts the samples and shows tokens and cost | ``test_all_in_one.py::test_the_overview_shows_chart_points_and_the_tokens_spent`` |
| one email per opening and per resolution; logs and pages without traceback or secret; SIGTERM stops cleanly | ``test_all_in_one.py::test_each_alert_was_emailed_once_open_and_once_resolved_and_the_logs_are_clean`` |
| gunicorn reads ``PORT``, ``HOST`` and ``WEB_CONCURRENCY`` from ``.env`` before binding | ``test_production_pair.py::test_gunicorn_binds_host_port_and_process_count_from_dotenv`` |
| health coverage is over active jobs (17 jobs, 4 closed: 100.00%, ``activeJobs`` 13) | ``test_production_pair.py::test_health_coverage_counts_active_jobs_only`` |
| embedded database: restarting gunicorn never strands the worker; the port is kept (``instance/secantus.json``) | ``test_production_pair.py::test_restarting_gunicorn_leaves_the_worker_on_the_same_database`` |
| the last process to exit stops the embedded database | ``test_production_pair.py::test_the_last_process_to_exit_stops_the_embedded_database`` |
| ``EMBEDDING_WORKER_ENABLED=false`` + ``flask --app app worker``: claims nothing, says so in one line | ``test_production_alerts.py::test_a_disabled_worker_claims_nothing_over_several_heartbeats_and_says_so_once`` |
| no live worker for longer than ``WORKER_DEAD_THRESHOLD``: workers alert (a disabled worker still checks and samples) | ``test_production_alerts.py::test_with_only_a_disabled_worker_the_workers_alert_opens_and_reminds`` |
| provider unhealthy (a worker degraded by a refused key): provider alert; a live worker resolves the workers alert | ``test_production_alerts.py::test_a_worker_with_a_refused_key_opens_the_provider_alert_and_the_workers_alert_resolves`` |
| ``systemctl restart jobflow-worker`` reads ``.env`` again: the fixed key resolves the provider alert | ``test_production_alerts.py::test_fixing_the_key_in_dotenv_and_restarting_the_worker_resolves_the_provider_alert`` |
| ``flask --app app check-alerts`` runs one check from cron | ``test_production_alerts.py::test_cron_check_alerts_tells_when_no_worker_runs_and_when_one_is_back`` |
| worker processes stop cleanly on SIGTERM; no traceback, no secret in their logs | ``test_production_alerts.py::test_the_processes_stop_cleanly_and_never_print_a_traceback_or_a_secret`` |
| ``cp .env.example .env`` changes nothing: every setting commented out | ``test_start_up.py::test_env_example_comments_out_every_setting`` |
| ... and under the worker unit (``Environment=DEBUG_*=false``, ``EnvironmentFile=.env``) no DEBUG logs, defaults used | ``test_start_up.py::test_env_example_as_dotenv_leaves_the_worker_units_debug_logs_off`` |
| ``deploy/``: the template unit ``jobflow-worker@.service``, ``MemoryMax=`` in the worker units | ``test_start_up.py::test_deploy_holds_the_template_worker_unit_and_memory_limits`` |
| a bad value stops start-up with one line naming the variable (every bad one at once, no traceback) | ``test_start_up.py::test_bad_settings_stop_every_entry_point_with_one_line_for_each`` |
| an unknown name in ``.env`` is warned with the likely setting; the product still starts | ``test_start_up.py::test_an_unknown_name_in_dotenv_is_named_with_the_likely_setting_and_the_product_starts`` |
| a database that cannot be reached says so (one line, host and port, never the password) | ``test_start_up.py::test_an_unreachable_database_is_named_in_one_line_without_its_password`` |
| ``migrate-embeddings``: ``DRY_RUN=true`` queues nothing and says so; without it, it queues; ``--yes`` | ``test_start_up.py::test_migration_dry_run_queues_nothing_and_the_real_run_queues_every_active_job`` |
| lists cross languages by default (``SIMILARITY_LANGUAGE_BALANCE``): language detected, correction fitted when a drain ends and stored (``similaritycorrections``), every list recomputed; each entry names its language; ``?language=`` keeps one | ``test_languages.py::test_lists_cross_languages_by_default_and_a_caller_can_ask_for_one`` |
| quick start: a job inserted with ``scripts/mongosh`` into ``python app.py``'s embedded database gets its list and its page | ``test_other_writers.py::test_a_job_inserted_with_mongosh_into_make_runs_database_gets_its_list`` |
| embedded database: requires the password kept in ``instance/secantus.auth`` (0600), never printed; stopped by its watchdog after ``kill -9`` of ``python app.py`` | the same test |
| commands: every state-changing command (``import-jobs``, ``load-demo``, ``migrate-embeddings``, ``recompute-all``, ``retry-failed``, ``clear-old-queue``, ``create-admin``, ``rollback``) is in the audit log with the OS user, host, arguments and result, and on the audit page | ``test_audit_trail.py::test_every_state_changing_command_is_in_the_audit_log_and_on_its_page`` |
| configuration: a ``.env`` others can read is made 600 with one line by ``flask``, gunicorn and ``python app.py`` | ``test_audit_trail.py::test_a_dotenv_others_can_read_is_made_private_by_every_entry_point`` |
| runbook: ``systemctl stop`` (SIGTERM) ends the worker within ``WORKER_GRACEFUL_SHUTDOWN_TIMEOUT`` even while a provider call hangs; items back to pending, attempt refunded; nothing logged after "stopped" | ``test_worker_shutdown.py::test_sigterm_while_the_provider_hangs_exits_within_the_grace_period`` |
| rollback: ``rollback --level 1`` reaches a worker whose provider call hangs within about a second | ``test_worker_shutdown.py::test_rollback_reaches_the_worker_while_the_provider_hangs`` |
| deployment: behind the README's nginx block (Debian's nginx; ports, certificate and upstream changed only), health answers with 50 slow clients connected; ``server_tokens off``; HTTP redirects to HTTPS; the forwarded scheme brings HSTS | ``test_proxy.py::test_behind_the_readme_nginx_slow_clients_do_not_stop_health`` |
| existing boards: ``JOBS_SOURCE_COLLECTION``, ``JOBS_FIELD_MAP``, ``JOBS_ACTIVE_STATUSES``; the board's collection only read | ``test_other_writers.py::test_a_board_that_keeps_its_jobs_in_its_own_collection_and_shape`` |
| a new embedding recipe: ``migrate-embeddings`` finds the jobs of the earlier one; every job serves a stored list throughout | ``test_recipe_upgrade.py::test_every_job_serves_a_stored_list_throughout_a_recipe_upgrade`` |
| change capture: every write of another application (inserts, text and other updates, closes, deletions, replacements, misfits) reaches the queue and the lists; a salary change queues nothing | ``test_change_capture.py::test_every_write_of_another_application_reaches_the_queue_and_the_lists`` |
| ... the capturing worker killed: the other takes over, nothing missed, no text embedded twice outside its held batch | ``test_change_capture.py::test_the_other_worker_takes_over_when_the_capturing_one_is_killed`` |
| ... the database killed and restarted mid-stream; writes made while the product was stopped; lost history swept | ``test_change_capture.py::test_the_database_killed_and_restarted_mid_stream_loses_nothing``, ``test_writes_made_while_the_product_was_stopped_are_caught_up``, ``test_lost_history_is_swept_and_everything_caught_up`` |
| the read path: a job closed through the API, or by another writer, leaves every answer of both gunicorn processes | ``test_read_path.py::test_a_job_closed_through_the_api_leaves_every_answer_of_both_processes``, ``test_a_job_closed_or_deleted_by_another_writer_leaves_every_answer`` |
| ... stored lists keep being served while the database is stopped, marked ``X-JobFlow-Stale``; health 503 | ``test_read_path.py::test_stored_lists_are_served_while_the_database_is_frozen`` |
| ... a changed text serves the fallback until its new list exists | ``test_read_path.py::test_a_changed_text_serves_the_fallback_until_its_new_list_exists`` |
"""
