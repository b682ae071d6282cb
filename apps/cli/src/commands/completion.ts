import { helpFor } from '../help.js';
import { type CliIo, ExitCode, usageError } from '../io.js';

const VERBS =
  'start get receive wait stop remove clean restart pause resume group send invoke session enter agent completion';

const BASH = `# rjob bash completion: source <(rjob completion bash)
_rjob() {
  local cur=\${COMP_WORDS[COMP_CWORD]} verb=\${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${VERBS} --help --version" -- "$cur"))
    return
  fi
  # The agent's job types, plugins' included (process and thread when it cannot be asked).
  case "\${COMP_WORDS[COMP_CWORD-1]}" in
    --type|-t) COMPREPLY=($(compgen -W "$(rjob agent plugins --types 2>/dev/null || echo process thread)" -- "$cur")); return ;;
  esac
  case "$verb" in
    start) COMPREPLY=($(compgen -W "--name --label --type --definition --eval --file --session --json --bytes --after --group --stdin-open --help" -- "$cur")) ;;
    get) COMPREPLY=($(compgen -W "--children --state --label --json --session --help" -- "$cur")) ;;
    receive) COMPREPLY=($(compgen -W "--keep --wait --follow --tail --timestamps --ndjson --session --help" -- "$cur")) ;;
    wait) COMPREPLY=($(compgen -W "--any --timeout --json --session --help" -- "$cur")) ;;
    stop) COMPREPLY=($(compgen -W "--session --help" -- "$cur")) ;;
    remove) COMPREPLY=($(compgen -W "--force --state --session --help" -- "$cur")) ;;
    pause|resume) COMPREPLY=($(compgen -W "--json --session --help" -- "$cur")) ;;
    restart) COMPREPLY=($(compgen -W "--all-failed --json --session --help" -- "$cur")) ;;
    clean) COMPREPLY=($(compgen -W "--state --older-than --json --session --help" -- "$cur")) ;;
    group) COMPREPLY=($(compgen -W "list add set remove --parallel --json --session --help" -- "$cur")) ;;
    send) COMPREPLY=($(compgen -W "--stdin --eof --no-newline --session --help" -- "$cur")) ;;
    invoke) COMPREPLY=($(compgen -W "--computer --session --limit --throttle --timeout --connect-timeout --out-dir --as-job --name --type --definition --eval --no-prefix --bytes --disconnected --help" -- "$cur")) ;;
    session) COMPREPLY=($(compgen -W "new list connect disconnect receive remove --help" -- "$cur")) ;;
    agent) COMPREPLY=($(compgen -W "start stop status plugins daemon --stdio --computer --json --help" -- "$cur")) ;;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
  esac
}
complete -o default -F _rjob rjob
`;

const ZSH = `#compdef rjob
# rjob zsh completion: rjob completion zsh > "\${fpath[1]}/_rjob"
# The agent's job types, plugins' included (process and thread when it cannot be asked).
_rjob_types() {
  local -a types
  types=(\${(f)"$(rjob agent plugins --types 2>/dev/null)"})
  (( \${#types} )) || types=(process thread)
  _describe 'job type' types
}
_rjob() {
  local -a verbs
  verbs=(${VERBS})
  if (( CURRENT == 2 )); then
    _describe 'command' verbs
    return
  fi
  case $words[2] in
    start) _arguments '--name[job name]:name:' '--label[free text shown with the job]:label:' '--type[job type]:type:_rjob_types' '--definition[job definition, JSON]:json:' '--eval[JavaScript]:code:' '--file[program]:file:_files' '--session[session]:session:' '--json' '--bytes' '--after[jobs to wait for]:ids:' '--group[job group]:group:' '--stdin-open' '*:: :_normal' ;;
    get) _arguments '--children' '--label[only jobs with this label]:label:' '--state[state]:state:(NotStarted Running Stopping Suspended Disconnected Completed Failed Stopped)' '--json' '--session[session]:session:' ;;
    receive) _arguments '--keep' '--wait' '--follow' '--tail[last N records]:n:' '--timestamps' '--ndjson' '--session[session]:session:' ;;
    wait) _arguments '--any' '--timeout[duration]:duration:' '--json' '--session[session]:session:' ;;
    stop) _arguments '--session[session]:session:' ;;
    remove) _arguments '--force' '--state[state]:state:(NotStarted Running Stopping Suspended Disconnected Completed Failed Stopped)' '--session[session]:session:' ;;
    pause|resume) _arguments '--json' '--session[session]:session:' ;;
    restart) _arguments '--all-failed' '--json' '--session[session]:session:' ;;
    clean) _arguments '--state[state]:state:(Completed Failed Stopped)' '--older-than[duration]:duration:' '--json' '--session[session]:session:' ;;
    group) _arguments '1:group command:(list add set remove)' '--parallel[jobs at once]:n:' '--json' '--session[session]:session:' '*:name:' ;;
    send) _arguments '--stdin' '--eof' '--no-newline' '--session[session]:session:' '*:text:' ;;
    invoke) _arguments '--computer[hosts]:hosts:_hosts' '--session[session]:session:' '--limit[host pattern]:pattern:' '--throttle[hosts at once]:n:' '--timeout[command time limit per host]:duration:' '--connect-timeout[time to reach a host]:duration:' '--out-dir[per-host output files]:dir:_files -/' '--as-job' '--name[job name]:name:' '--type[job type]:type:_rjob_types' '--definition[job definition, JSON]:json:' '--no-prefix' '--bytes' '--disconnected' '*:: :_normal' ;;
    session) _values 'session command' new list connect disconnect receive remove ;;
    agent) _arguments '1:agent command:(start stop status plugins daemon)' '--computer[hosts]:hosts:_hosts' '--json' ;;
    completion) _values 'shell' bash zsh ;;
  esac
}
compdef _rjob rjob
`;

export async function completion(argv: readonly string[], io: CliIo): Promise<number> {
  const [shell, ...more] = argv;
  if (shell === '--help' || shell === '-h') return helpFor('completion', io);
  if (more.length > 0) throw usageError(`unexpected argument ${more[0]}`);
  if (shell === 'bash') io.stdout.write(BASH);
  else if (shell === 'zsh') io.stdout.write(ZSH);
  else throw usageError('completion needs bash or zsh');
  return ExitCode.Ok;
}
