import { type CliIo, ExitCode } from './io.js';

const COMMON = `
Common options:
  -s, --session NAME   work in a named session (rjob session new) instead of the local agent
  --state-dir DIR      state directory (default $RJOB_STATE_DIR, else ~/.local/state/rjob)
  -h, --help           this help`;

export const HELP: Record<string, string> = {
  rjob: `rjob: PowerShell-style jobs and remoting from a shell

Usage: rjob <command> [options]

Jobs (in the local agent, or in a session with -s):
  start      start a background job            rjob start --name build -- 'make all'
  get        list jobs                         rjob get
  receive    print what jobs produced          rjob receive build --keep
  wait       wait for jobs to finish           rjob wait build --timeout 60
  stop       stop jobs                         rjob stop build
  remove     remove finished jobs              rjob remove build
  clean      remove every finished job         rjob clean --older-than 1h
  restart    run finished jobs again           rjob restart --all-failed
  pause      suspend jobs (SIGSTOP)            rjob pause build
  resume     let suspended jobs go on          rjob resume build
  group      job groups with a parallel limit  rjob group add build --parallel 2
  send       write to a running job's stdin    rjob send 3 yes

Remoting:
  invoke     run a command on hosts            rjob invoke -c web1,web2 -- uptime
  session    open, list, disconnect sessions   rjob session new web1 --name s1
  enter      an interactive remote prompt      rjob enter web1

Other:
  agent      the local agent daemon            rjob agent status
  completion shell completion script           rjob completion bash

Run 'rjob <command> --help' for a command's options. Exit codes and more: docs/cli.md in the
rjob package, or https://github.com/rjob/rjob/blob/main/docs/cli.md
`,
  start: `Usage: rjob start [options] [--] COMMAND...
       rjob start --type thread --eval JS [-- ARGS...]
       rjob start --file PROGRAM [-- ARGS...]
       rjob start --type NAME --definition JSON

Starts a job and prints it. Local jobs run in the local agent (started on first use), so they
outlive this shell; 'rjob agent stop' ends them. The first word that is not one of start's own
options begins the command, so '--' is needed only before a command that begins with '-'.

Options:
  -n, --name NAME      name the job (names are how later verbs find it)
  -l, --label TEXT     free text shown with the job (get's Label column; get --label filters)
  -t, --type TYPE      process (default: a child process), thread (a worker thread in the agent),
                       or a type a plugin adds (rjob agent plugins lists them)
  -d, --definition JSON  the job's definition as is, for any type (a plugin's takes only this)
  -e, --eval JS        the body of an async generator; yielded values become output records
  -f, --file PROGRAM   run a program with the arguments after --, no shell involved
  --bytes              keep stdout as raw bytes, not lines; receive writes them out unchanged
  -a, --after ID[,ID...]  wait in NotStarted until those jobs Completed (ids or names); if one
                       Failed or was Stopped, the job fails with ERR_DEPENDENCY_FAILED
  -g, --group NAME     run in a job group (rjob group add): at most its --parallel jobs run at
                       once, the others wait in NotStarted, in order
  --stdin-open         keep the job's stdin open for 'rjob send' (else it reads end of file)
  --json               print the job as JSON
${COMMON}

Examples:
  rjob start sleep 5
  rjob start --after build,test -- ./deploy.sh
  rjob start --group downloads -- 'curl -sO https://example.com/big.iso'
  rjob start --stdin-open --name py -- python3 -i
  rjob start --label 'nightly backup' -- ./backup.sh
  rjob start --name build -- 'sleep 1; echo built'
  rjob start -s s1 --name backup --bytes -- 'tar cz /etc'; rjob receive -s s1 backup --wait > etc.tgz
  rjob start --type thread --eval 'for (let i = 0; i < 3; i++) yield i'
  rjob start --type repeat --definition '{"text":"hi","times":3}'
  rjob start -s s1 --name audit -- 'find /etc -name "*.conf"'
`,
  get: `Usage: rjob get [ID|NAME...] [options]

Lists jobs (Get-Job). Names accept * and ? wildcards. A failed process job shows its exit code
in the State column (Failed (3)); on a terminal the table is cut to its width.

Options:
  --children           also list the child jobs of the jobs shown (one per host of a fan-out)
  --state STATE        only jobs in that state (Running, Completed, Failed, Stopped, ...)
  -l, --label TEXT     only jobs with that label (* and ? as wildcards)
  --json               print JSON instead of a table (exitCode for finished process jobs)
${COMMON}

Examples:
  rjob get
  rjob get --state failed
  rjob get --label 'nightly*'
  rjob get sys --children
  rjob get -s s1 --json
`,
  receive: `Usage: rjob receive ID|NAME... [options]

Prints what jobs produced (Receive-Job): output on stdout, the error stream on stderr, warnings and
verbose/debug messages labelled on stderr. What is printed is consumed unless --keep. A Failed
job's reason is printed every time, and the exit code is 1.

Options:
  -k, --keep           leave the records in the job
  -w, --wait           keep printing as records come, until the jobs finish
  -F, --follow         as tail -f: everything so far and what comes until the jobs finish,
                       consuming nothing (--wait --keep)
  --tail N             only the last N records held now (consumes nothing; with --follow, then
                       what comes)
  --timestamps         each line starts with its record's time (ISO 8601, UTC)
  --ndjson             one JSON object per record on stdout
${COMMON}

Examples:
  rjob receive build
  rjob receive 2 --keep
  rjob receive build --tail 20 --follow --timestamps
  rjob receive -s s1 audit --keep --ndjson
`,
  wait: `Usage: rjob wait ID|NAME... [options]

Waits until the jobs have finished (Wait-Job) and prints them. With no job, waits for every job.

Options:
  --any                return when the first job finishes
  --timeout DURATION   give up after this long (30 = 30 s; also 500ms, 2m); exit code 5
  --json               print JSON instead of a table
${COMMON}

Examples:
  rjob wait build
  rjob wait 1 2 --any --timeout 5m
`,
  stop: `Usage: rjob stop ID|NAME... [options]

Stops jobs (Stop-Job): a process job gets SIGTERM, then SIGKILL after its grace period.
${COMMON}

Example:
  rjob stop build
`,
  remove: `Usage: rjob remove ID|NAME... [--force] [options]
       rjob remove --state STATE [ID|NAME...] [options]

Removes jobs and their records (Remove-Job). A job still running is refused (exit 6) unless --force,
which stops it first.

Options:
  --force              stop running jobs, then remove them
  --state STATE        only the jobs in that state (of those named, or of all without a name)
${COMMON}

Examples:
  rjob remove build
  rjob remove 3 --force
  rjob remove --state Failed
`,
  pause: `Usage: rjob pause ID|NAME... [options]

Suspends running process jobs: their whole process group gets SIGSTOP, and the job shows
Suspended until 'rjob resume'. A suspended job can still be stopped. Prints the jobs.

Options:
  --json               print the jobs as JSON
${COMMON}

Example:
  rjob pause build
`,
  resume: `Usage: rjob resume ID|NAME... [options]

Lets suspended jobs go on: their process group gets SIGCONT and they show Running again. Jobs
that are not Suspended are left as they are. Prints the jobs.

Options:
  --json               print the jobs as JSON
${COMMON}

Example:
  rjob resume build
`,
  group: `Usage: rjob group [list] [options]
       rjob group add NAME --parallel N
       rjob group set NAME --parallel N
       rjob group remove NAME

Job groups of the agent (pueue's groups): 'rjob start --group NAME' runs a process job in one, and
at most N of a group's jobs run at once; the others wait in NotStarted and start in the order they
were started as running ones finish. Jobs without --group are in 'default', which is unlimited.
Groups and their limits are kept in the state directory, so they survive an agent restart.
'set' changes a limit (a higher one lets waiting jobs go at once); 'remove' refuses a group that
still has running or waiting jobs (ERR_GROUP_IN_USE, exit 6). An unknown group is
ERR_GROUP_NOT_FOUND (exit 3).

Options:
  -p, --parallel N     how many of the group's jobs run at once
  --json               print the groups as JSON
${COMMON}

Examples:
  rjob group add downloads --parallel 2
  rjob group list
  rjob group set downloads --parallel 4
  rjob group remove downloads
`,
  send: `Usage: rjob send ID|NAME TEXT... [options]
       rjob send ID|NAME --stdin [--eof]
       rjob send ID|NAME --eof

Writes to the stdin of a running job started with --stdin-open: TEXT and a newline, or (--stdin)
everything this command reads from its own stdin until end of file. --eof closes the job's stdin
afterwards (alone: only closes it), so the job reads end of file. A job without an open stdin is
ERR_STDIN_CLOSED, one not running ERR_JOB_NOT_RUNNING (both exit 6).

Options:
  --stdin              send this command's stdin until end of file
  --eof                close the job's stdin afterwards
  -n, --no-newline     send TEXT without the newline
${COMMON}

Examples:
  rjob send py 'print(6 * 7)'
  cat data.csv | rjob send sorter --stdin --eof
  rjob send sorter --eof
`,
  restart: `Usage: rjob restart ID|NAME... [options]
       rjob restart --all-failed [options]

Runs finished jobs again, each as a new job with the same command, working directory, environment,
name and label (the agent keeps a job's definition until it is removed). A job still running is
refused (exit 6). Prints the new jobs.

Options:
  --all-failed         restart every Failed job
  --json               print the new jobs as JSON
${COMMON}

Examples:
  rjob restart build
  rjob restart --all-failed
`,
  clean: `Usage: rjob clean [--state STATE] [--older-than DURATION] [options]

Removes finished jobs (Completed, Failed, Stopped) and their records; running jobs are never
touched. Prints the jobs removed.

Options:
  --state STATE        only finished jobs in that state: Completed, Failed or Stopped
  --older-than DUR     only jobs that ended at least this long ago (30 = 30 s; also 10m, 2h)
  --json               print the removed jobs as JSON
${COMMON}

Examples:
  rjob clean
  rjob clean --state Completed --older-than 1h
`,
  invoke: `Usage: rjob invoke -c HOST[,HOST...] [options] -- COMMAND...

Runs a command on every host (Invoke-Command): each line of output is prefixed with [host], and a
summary of succeeded / failed / unreachable hosts goes to stderr at the end.

HOST is 'localhost' (the local agent), a target a plugin transport takes (cmd://NAME with the
example command transport; rjob agent plugins lists them), an ssh target ([user@]host[:port] or a
~/.ssh/config alias), or a ws:// or wss:// URL of an agent's WebSocket listener. @FILE reads an inventory (INI-like:
[group] sections, [group:children], ranges as web[01:20]; a plain list of hosts, one a line, is
one); @FILE:PATTERN takes the hosts PATTERN selects there. A PATTERN is groups, hosts and globs
joined by ':' or ',' ('web:db'), '&G' keeps only hosts also in G, '!H' removes H. ssh_config's
ProxyCommand and ProxyJump are honoured.

Options:
  -c, --computer HOSTS comma-separated hosts, @FILE or @FILE:PATTERN (repeatable)
  -l, --limit PATTERN  only the hosts PATTERN selects among those given (groups of the inventories)
  --throttle N         hosts worked on at once (default 32)
  --timeout DURATION   end each host's command after DURATION (30, 30s, 500ms, 2m): ERR_JOB_TIMEOUT
  --connect-timeout DURATION
                       give up reaching a host after DURATION: ERR_SSH_CONNECT_TIMEOUT
  --out-dir DIR        each host's output to DIR/HOST.out, its errors to DIR/HOST.err (as pssh -o/-e);
                       nothing on stdout, the summary still on stderr
  --as-job             run as a job in the local agent, one child job per host; prints the job
  -n, --name NAME      with --as-job: name the job
  -t, --type TYPE      process (default), thread or a plugin's type, as for start
  -d, --definition JSON  the job's definition as is, as for start
  -e, --eval JS        run JavaScript instead of a command
  --no-prefix          print output lines without the [host] prefix
  --bytes              stdout as raw bytes, written out unchanged (no prefix; not with --as-job)
  --disconnected       start the command as a job in a new session on each host and leave the
                       sessions Disconnected (Invoke-Command -InDisconnectedSession); prints them
${COMMON}

Environment: RJOB_REMOTE_AGENT (remote agent command, default 'rjob agent --stdio'),
RJOB_REMOTE_SOCKET (remote daemon socket, tried first; by default ~USER/.local/state/rjob/agent.sock in /home or /root), RJOB_SSH_KNOWN_HOSTS, RJOB_SSH_IDENTITY, RJOB_SSH_STRICT (yes|accept-new|no), RJOB_WS_TOKEN_FILE.

Exit codes: 0 all succeeded, 1 some command failed, 4 some host unreachable (wins over 1).

Examples:
  rjob invoke -c localhost -- 'echo hello from rjob'
  rjob invoke -c web1,web2 -- 'uname -a'
  rjob invoke -c @hosts.txt --throttle 32 -- 'hostname; uptime'
  rjob invoke -c @inventory.ini:web --limit '!web07' --out-dir results -- 'df -h /'
  rjob invoke -c @inventory.ini:prod:&db --connect-timeout 5s --timeout 2m -- ./check.sh
  rjob invoke -c web1,web2 --as-job --name sys -- 'uname -a'
  rjob invoke -c web1 --bytes -- 'tar cz /var/log' > logs.tgz
  rjob invoke -c web1,web2 --disconnected -- './long-report.sh'; rjob session receive Session1
`,
  session: `Usage: rjob session new HOST [--name NAME]
       rjob session list [-c HOST[,HOST...]] [--json]
       rjob session connect|disconnect|remove NAME
       rjob session connect ID|NAME -c HOST [--name NAME]
       rjob session receive NAME [--keep] [--ndjson]
       rjob session receive NAME --out-target job [--json]

Persistent sessions with an agent (New-PSSession and friends). A session's jobs and their results
stay on its agent. The local agent holds the session open between commands; -s NAME reaches it
through that connection (no new login). Its id and resume secret are kept in the state directory
(mode 0600), so the local agent can take it up again after a restart. Use it with -s NAME on
start, get, receive, wait, stop, remove and invoke, or 'rjob enter NAME'.

  new        open a session (HOST as for invoke -c) and remember it
  list       the remembered sessions and their state on their agents; with -c, every session
             the agents hold for you (to find one opened elsewhere)
  connect    connect it again and show it (fails when its agent lost it); with -c HOST, take
             over a Disconnected session another client opened there (an id or name from
             'session list -c HOST'), remembered under its name or --name
  disconnect leave it Disconnected (its jobs go on; RemoteJobs in it show Disconnected)
  receive    print (and consume unless --keep) what the session's jobs hold; with
             --out-target job, start a job in the local agent for each of the session's jobs
             that runs or holds data, streaming its output (rjob receive ID --wait), and print them
  remove     end the session on its agent (its jobs are stopped and removed) and forget it
${COMMON}

Examples:
  rjob session new server01 --name s1
  rjob start -s s1 --name audit -- 'find /etc -name "*.conf"'
  rjob receive -s s1 audit --keep
  rjob session receive s1 --out-target job
  rjob session remove s1
`,
  enter: `Usage: rjob enter HOST|SESSION

An interactive prompt in a remote session (Enter-PSSession). At the prompt '[HOST] rjob> ':
  - start, get, receive, wait, stop, remove run inside the session (their jobs live there);
  - 'VERB … > FILE' writes the verb's output to FILE on the remote host ('>>' appends); for
    'receive' the agent writes it, only the output stream, and keeps the records if it cannot;
  - any other line runs as a shell command there;
  - 'exit' leaves.
A HOST gets a temporary session that ends, with its jobs, on exit; a SESSION made with
'rjob session new' stays, with its jobs, after exit.

Examples:
  rjob enter server01
  rjob session new server01 --name s1 && rjob enter s1
`,
  agent: `Usage: rjob agent start|stop|status
       rjob agent plugins [--json] [--types]
       rjob agent status|stop -c HOST[,HOST...] [--json]
       rjob agent daemon [--socket PATH] [--state-dir DIR]
       rjob agent --stdio [--no-daemon] [--socket PATH] [--state-dir DIR]
       rjob agent --listen URL [--cert FILE --key FILE] [--token-file FILE] [--insecure] [--state-dir DIR]

The local agent daemon holds local jobs and sessions. 'start' starts it if it is not running,
'stop' ends it and every job in it, 'status' tells whether it runs (exit 3 when not). 'daemon'
runs it in the foreground; '--stdio' is what a remote host runs over SSH: it bridges stdio to the
daemon and starts the daemon when needed.

'plugins' lists the agent's job types and target transports, plugins' included, and the plugins
of the config file ($RJOB_CONFIG, else ~/.config/rjob/config.json: {"plugins": ["./mod.mjs"]})
it could not load, with their codes on stderr (exit 1). The agent reads the file when it starts:
after changing it, 'rjob agent stop'. '--types' prints one type name or alias a line.

With -c HOST (hosts as for invoke, commas or @FILE), 'status' and 'stop' work on the agent daemons
of those hosts, one line per host: 'status' gives the daemon's rjob version, pid, uptime and your
sessions and jobs there (reaching a host starts its daemon on demand: 'started now'); 'stop' ends
the daemon as SIGTERM does (its jobs end, its sessions are kept for the next one), or says it was
not running. Exit 4 when a host was unreachable, 1 when another failure happened.

'--listen wss://HOST:PORT' runs an agent in the foreground for WebSocket clients until SIGTERM or
Ctrl-C. TLS uses --cert/--key (PEM), else a self-signed pair kept in the state directory; the
line it prints gives the URL with the certificate's pin (#sha256=...) and the token file (0600,
generated on first start; default <state dir>/ws-token) that clients need in RJOB_WS_TOKEN_FILE.
Plain ws:// only on loopback unless --insecure. Port 0 picks a free port.

Examples:
  rjob agent status
  rjob agent stop
  rjob agent plugins
  rjob agent status -c web1,web2
  rjob agent stop -c web1
  rjob agent --listen wss://0.0.0.0:7443
`,
  completion: `Usage: rjob completion bash|zsh

Prints a completion script. Examples:
  source <(rjob completion bash)
  rjob completion zsh > "\${fpath[1]}/_rjob"
`,
};

export function helpFor(verb: string, io: CliIo): number {
  io.stdout.write(HELP[verb] ?? HELP.rjob!);
  return ExitCode.Ok;
}
