// Command apidump prints the exported API of the core module's public
// packages, one line per identifier, sorted: the format of the checked-in
// api/ files (like the Go project's own api/ directory).
//
//	go run ./internal/cmd/apidump > api/responsesrelay.txt   # record a deliberate change
//	go run ./internal/cmd/apidump -count                     # identifiers per package
//
// Its test fails when the exported API differs from api/responsesrelay.txt,
// so that every change to the public surface shows up in review.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

func main() {
	count := flag.Bool("count", false, "print the number of identifiers and of fields/methods per package instead")
	root := flag.String("root", "", "module root (default: found from this source file)")
	flag.Parse()
	dir := *root
	if dir == "" {
		dir = moduleRoot()
	}
	lines, err := Dump(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apidump:", err)
		os.Exit(1)
	}
	if *count {
		for _, c := range Count(lines) {
			fmt.Printf("%-20s %4d identifiers %4d fields/methods\n", c.Pkg, c.Idents, c.Members)
		}
		return
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

// moduleRoot is the directory three levels above this file.
func moduleRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}
