package main

import (
	"testing"
	"time"
)

func TestLongestStallCountsFromTheDisruptionToTheEnd(t *testing.T) {
	from := time.Unix(100, 0)
	at := func(ms int) time.Time { return from.Add(time.Duration(ms) * time.Millisecond) }
	cases := []struct {
		name string
		acks []time.Time
		want time.Duration
	}{
		{"no acknowledgement at all", nil, time.Second},
		{"a pause in the middle", []time.Time{at(-50), at(100), at(700), at(900)}, 600 * time.Millisecond},
		{"from the disruption to the first", []time.Time{at(800), at(850)}, 800 * time.Millisecond},
		{"from the last to the end", []time.Time{at(10), at(20)}, 980 * time.Millisecond},
		{"later ones are ignored", []time.Time{at(100), at(200), at(300), at(400), at(500), at(600), at(700), at(800), at(900), at(1500)}, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := longestStall(c.acks, from, at(1000)); got != c.want {
			t.Errorf("%s: longestStall = %s, want %s", c.name, got, c.want)
		}
	}
}
