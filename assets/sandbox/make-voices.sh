#!/bin/sh
# Regenerates the voice clips of the sandbox network (docs/sandbox.md) with espeak-ng and sox:
# 8000 Hz mono 16-bit PCM WAVs, leading and trailing silence trimmed, peaks at -3 dBFS.
#   apt-get install -y espeak-ng sox
#   sh assets/sandbox/make-voices.sh
# softphone/server/voices.py loads these files; their names are part of that module.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() {  # say NAME WORDS-PER-MINUTE TEXT
    espeak-ng -v en-us -s "$2" -w "$tmp/$1.wav" "$3"
    sox "$tmp/$1.wav" -r 8000 -c 1 -b 16 -e signed-integer "$1-8k.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse gain -n -3
}

say ivr-menu 175 "Welcome to the audin sandbox. Enter some digits, then press the pound key."
say ivr-you-entered 170 "You entered"
for pair in 0:zero 1:one 2:two 3:three 4:four 5:five 6:six 7:seven 8:eight 9:nine \
    star:star a:A b:B c:C d:D; do
    say "digit-${pair%%:*}" 190 "${pair#*:}"
done
say speech 175 "Hello, this is the audin sandbox speech line. \
This recorded message tests the audio of your call. Goodbye."
