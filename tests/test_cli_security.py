"""The command line's trust boundaries (issue 24): a private ``.env``, admin passwords that are hard to guess and
never on the command line, every state-changing command audited, and ``test-embeddings`` stopping at the
specification's placeholder key."""
import errno
import os
import pwd
import socket
import stat

import pytest

from jobflow.models import AdminUser, AuditEntry, QueueItem
from jobflow.startup import private_env_file
from jobflow.timeutil import utcnow


def _file_mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- 2: a .env others can read ------------------------------------------------------------------------------

def test_a_dotenv_others_can_read_is_made_private_with_one_line(tmp_path, capsys):
    env = tmp_path / ".env"
    env.write_text("SECRET_KEY=" + "k" * 40 + "\n")
    env.chmod(0o644)                                     # what `cp .env.example .env` gives
    private_env_file(env)
    private_env_file(env)                                # the next start finds it private: nothing to say
    assert _file_mode(env) == 0o600
    assert capsys.readouterr().err.splitlines() == [
        f"jobflow: warning: {env} was readable by other users: changed its mode to 600"]
    assert env.read_text() == "SECRET_KEY=" + "k" * 40 + "\n"


def test_a_dotenv_whose_mode_cannot_change_stops_start_up_naming_the_chmod(tmp_path, capsys, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("ADMIN_API_TOKEN=" + "t" * 20 + "\n")
    env.chmod(0o640)                                     # group-readable counts too

    def refuse(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(SystemExit) as info:
        private_env_file(env)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"jobflow: cannot start: {env} is readable by other users and its mode cannot be changed "
                    f"(Operation not permitted); run: chmod 600 {env}")
    assert "t" * 20 not in line


# --- 7: admin passwords ----------------------------------------------------------------------------------------

@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_password_on_the_command_line_is_refused_and_names_the_other_ways(runner):
    result = runner.invoke(args=["create-admin", "ops@example.com", "--password", "Visible-in-ps-Kq9x"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: --password is not accepted") and "--password-stdin" in line
    assert "JOBFLOW_ADMIN_PASSWORD" in result.output and "Visible-in-ps" not in result.output
    assert "Traceback" not in result.output and AdminUser.objects.count() == 0


@pytest.mark.parametrize("password,reason", [
    ("12345678", "at least 12 characters"),
    (" " * 8, "at least 12 characters"),
    (" " * 14, "not only spaces"),
    ("123456789012", "too easy to guess"),
    ("password1234", "too easy to guess"),
    ("qwertyuiopas", "too easy to guess"),
    ("opsopsopsops", "too easy to guess"),
])
def test_weak_admin_passwords_are_refused_with_the_reason(runner, password, reason):
    result = runner.invoke(args=["create-admin", "ops@example.com", "--password-stdin"], input=password + "\n")
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("Error: ") and reason in line
    assert password.strip() == "" or password not in line
    assert AdminUser.objects.count() == 0


def test_the_password_comes_from_stdin_the_environment_or_the_prompt(runner):
    from jobflow.ops.users import authenticate
    assert runner.invoke(args=["create-admin", "a@example.com", "--password-stdin"],
                         input="lantern-orbit-quietly\n").exit_code == 0
    assert runner.invoke(args=["create-admin", "b@example.com"],
                         env={"JOBFLOW_ADMIN_PASSWORD": "copper-meadow-sailing"}).exit_code == 0
    prompted = runner.invoke(args=["create-admin", "c@example.com"], input="violet-harbor-engine\n" * 2)
    assert prompted.exit_code == 0 and "violet-harbor-engine" not in prompted.output
    assert authenticate("a@example.com", "lantern-orbit-quietly")
    assert authenticate("b@example.com", "copper-meadow-sailing")
    assert authenticate("c@example.com", "violet-harbor-engine")
    empty = runner.invoke(args=["create-admin", "d@example.com", "--password-stdin"], input="")
    assert empty.exit_code == 1 and "standard input held no password" in empty.output


# --- 8: every state-changing command is audited ------------------------------------------------------------

def test_a_command_writes_who_where_what_and_how_it_ended(runner):
    old = utcnow().replace(year=2020)
    QueueItem._get_collection().insert_many([{"jobId": f"j{n}", "status": "completed", "finishedAt": old,
                                              "createdAt": old} for n in range(7)])
    result = runner.invoke(args=["clear-old-queue", "--days", "0"])
    assert result.exit_code == 0, result.output
    (entry,) = AuditEntry.objects(action="clear-old-queue")
    assert (entry.actor, entry.via, entry.count, entry.target) == (pwd.getpwuid(os.geteuid()).pw_name, "cli", 7,
                                                                    "--days 0")
    assert entry.ip == socket.gethostname() and entry.detail["host"] == socket.gethostname()
    assert entry.detail["arguments"] == {"--days": 0} and entry.detail["result"] == "ok"


def test_a_failed_command_is_audited_with_its_error_and_never_a_password(runner, app):
    wrong = runner.invoke(args=["rollback", "--level", "3", "--confirm", "not-the-name"])
    assert wrong.exit_code == 1
    (entry,) = AuditEntry.objects(action="rollback")
    assert entry.detail["result"] == "failed" and "does not match the database name" in entry.detail["error"]
    assert entry.target.startswith("--level 3 --confirm not-the-name: failed: confirmation")
    weak = runner.invoke(args=["create-admin", "ops@example.com", "--password-stdin"], input="password1234\n")
    assert weak.exit_code == 1
    (made,) = AuditEntry.objects(action="create-user")
    assert made.detail["result"] == "failed" and "too easy to guess" in made.detail["error"]
    assert "password1234" not in str(made.to_mongo())
    assert made.detail["arguments"] == {"email": "ops@example.com", "--password-stdin": True, "--role": "admin"}


def test_a_dry_run_changes_nothing_and_writes_nothing(runner):
    assert runner.invoke(args=["rollback", "--level", "1", "--dry-run"]).exit_code == 0
    assert runner.invoke(args=["migrate-embeddings", "--dry-run"]).exit_code == 0
    assert AuditEntry.objects.count() == 0
    assert runner.invoke(args=["rollback", "--reenable"]).exit_code == 0
    assert [e.target for e in AuditEntry.objects(action="rollback")] == ["--reenable"]


# --- 15: the specification's placeholder key ---------------------------------------------------------------------

@pytest.mark.parametrize("placeholder", ["sk-your-openai-api-key-here", "sk-your-actual-openai-api-key-here"])
def test_test_embeddings_stops_at_the_placeholder_key_without_calling_the_provider(make_app, server, placeholder):
    app = make_app(EMBEDDING_PROVIDER="", OPENAI_API_KEY=placeholder, OPENAI_BASE_URL=server.base_url)
    assert app.config["EMBEDDING_PROVIDER"] == "openai"        # the placeholder alone chooses OpenAI
    result = app.test_cli_runner().invoke(args=["test-embeddings"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: OPENAI_API_KEY is still the placeholder") and "nothing was sent" in line
    assert placeholder not in line
    assert server.requests == 0
