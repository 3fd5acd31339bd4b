# bash completion for repozo. Generated from `repozo --help` by
# tests/integration/man.rs: do not edit.
_repozo() {
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    # --option=value: bash splits the word at '='
    if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then
        prev="${COMP_WORDS[COMP_CWORD-2]}"
    elif [[ "$cur" == "=" ]]; then
        prev="${COMP_WORDS[COMP_CWORD-1]}"
        cur=""
    fi
    case "$prev" in
        -r|--repository|--blob-dir)
            COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        -f|--file|-o|--output|--metrics)
            COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        -D|--date|--keep|--max-age)
            COMPREPLY=(); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "-B --backup -R --recover -V --verify -v --verbose -h --help -r --repository= -f --file= -F --full -Q --quick -z --gzip -k --kill-old-on-full -D --date= -o --output= -w --with-verify -L --list --json --keep= --prune-index --max-age= --blob-dir= --metrics= --version" -- "$cur") )
        [[ "${COMPREPLY[0]}" == *= ]] && compopt -o nospace
    fi
}
complete -F _repozo repozo
