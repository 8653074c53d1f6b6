// Written by hand: a tiny module of our own (the pause program has no Go module upstream).
module pinster.io/build/pause

go 1.26
