# Sourced by scripts/garage-cluster.sh and scripts/test-s3-cluster.sh (with
# ROOT set to the project's root): the raw objects of a bucket through
# awscli from the test venv (tests/py/requirements.txt).
#   s3mini ls BUCKET PREFIX   "SIZE KEY" lines;  s3mini get|put BUCKET KEY FILE
s3mini() {
    local aws="$ROOT/.venv/bin/aws"
    case $1 in
    ls)
        local out
        out=$("$aws" --endpoint-url "$AWS_ENDPOINT_URL" s3api list-objects-v2 --bucket "$2" \
            --prefix "$3" --query 'Contents[].[Size,Key]' --output text) || return 1
        [ "$out" = None ] || [ -z "$out" ] || printf '%s\n' "$out" ;;
    get) "$aws" --endpoint-url "$AWS_ENDPOINT_URL" s3api get-object --bucket "$2" --key "$3" "$4" > /dev/null ;;
    put) "$aws" --endpoint-url "$AWS_ENDPOINT_URL" s3api put-object --bucket "$2" --key "$3" --body "$4" > /dev/null ;;
    esac
}
