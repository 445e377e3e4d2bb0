package main

import (
	"testing"
	"time"
)

func TestParseSync(t *testing.T) {
	for _, tc := range []struct {
		in       string
		always   bool
		interval time.Duration
		bad      bool
	}{
		{in: ""},
		{in: "always", always: true},
		{in: "1s", interval: time.Second},
		{in: "2m", interval: 2 * time.Minute},
		{in: "0s", bad: true},
		{in: "-1s", bad: true},
		{in: "sometimes", bad: true},
	} {
		always, interval, err := parseSync(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("parseSync(%q): err %v, want error %v", tc.in, err, tc.bad)
			continue
		}
		if always != tc.always || interval != tc.interval {
			t.Errorf("parseSync(%q) = %v, %v; want %v, %v", tc.in, always, interval, tc.always, tc.interval)
		}
	}
}
