package main

import (
	"strings"
	"testing"
)

func TestParseReplicas(t *testing.T) {
	got, err := parseReplicas("1=127.0.0.1:7100, 2=127.0.0.1:7104,3=127.0.0.1:7105")
	if err != nil || len(got) != 3 || got[2] != "127.0.0.1:7104" {
		t.Fatalf("parseReplicas = %v, %v", got, err)
	}
	for in, want := range map[string]string{
		"1=a:1,1=b:2":  "listed twice",
		"1=a:1,2=a:1":  "listed twice",
		"0=a:1":        "from 1",
		"x=a:1":        "from 1",
		"1a:1":         "want ID=HOST:PORT",
		"1=":           "want ID=HOST:PORT",
		"1=a:1,,2=b:2": "want ID=HOST:PORT",
		"":             "want ID=HOST:PORT",
		"2=a:1, 3=b:2": "",
	} {
		_, err := parseReplicas(in)
		if want == "" {
			if err != nil {
				t.Errorf("parseReplicas(%q): %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseReplicas(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}
