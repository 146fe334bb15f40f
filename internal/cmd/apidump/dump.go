package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// skipDirs are not part of the public API: internal packages, the
// examples module, test data and the recorded API itself.
var skipDirs = map[string]bool{"internal": true, "examples": true, "testdata": true, "api": true}

// Dump returns the exported API of every public package under root, one
// line per identifier:
//
//	pkg relay, type Handler struct
//	pkg relay, type Handler struct, MaxBodyBytes int64
//	pkg relay, method (*Handler) ServeHTTP(http.ResponseWriter, *http.Request)
//	pkg relay, func NewTransport() *http.Transport
//	pkg relay, const DefaultMaxBodyBytes
//	pkg relay, var ErrHookTimeout error
//
// Types are written as they appear in the source, so a changed signature
// is a changed line.
func Dump(root string) ([]string, error) {
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (skipDirs[name] || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		pkgLines, err := dumpDir(path, filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		lines = append(lines, pkgLines...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(lines)
	return slices.Compact(lines), nil
}

func dumpDir(dir, rel string) ([]string, error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var lines []string
	for name, pkg := range pkgs {
		if name == "main" {
			continue
		}
		label := rel
		if label == "." {
			label = name
		}
		d := &dumper{fset: fset, prefix: "pkg " + label + ", "}
		for _, f := range pkg.Files {
			d.file(f)
		}
		lines = append(lines, d.lines...)
	}
	return lines, nil
}

type dumper struct {
	fset   *token.FileSet
	prefix string
	lines  []string
}

func (d *dumper) add(s string) { d.lines = append(d.lines, d.prefix+s) }

func (d *dumper) expr(e ast.Expr) string {
	e = unnamed(e)
	var b bytes.Buffer
	printer.Fprint(&b, d.fset, e)
	// One line per identifier: collapse the layout of multi-line types.
	return strings.Join(strings.Fields(b.String()), " ")
}

func (d *dumper) file(f *ast.File) {
	for _, decl := range f.Decls {
		switch decl := decl.(type) {
		case *ast.FuncDecl:
			d.fn(decl)
		case *ast.GenDecl:
			for _, spec := range decl.Specs {
				switch spec := spec.(type) {
				case *ast.TypeSpec:
					d.typ(spec)
				case *ast.ValueSpec:
					kind := "var"
					if decl.Tok == token.CONST {
						kind = "const"
					}
					for _, n := range spec.Names {
						if !n.IsExported() {
							continue
						}
						if spec.Type != nil {
							d.add(kind + " " + n.Name + " " + d.expr(spec.Type))
						} else {
							d.add(kind + " " + n.Name)
						}
					}
				}
			}
		}
	}
}

func (d *dumper) fn(f *ast.FuncDecl) {
	if !f.Name.IsExported() {
		return
	}
	sig := d.expr(f.Type)
	sig = strings.TrimPrefix(sig, "func")
	if f.Recv == nil || len(f.Recv.List) == 0 {
		d.add("func " + f.Name.Name + sig)
		return
	}
	recv := f.Recv.List[0].Type
	base := recv
	if s, ok := base.(*ast.StarExpr); ok {
		base = s.X
	}
	if ix, ok := base.(*ast.IndexExpr); ok {
		base = ix.X
	}
	if ix, ok := base.(*ast.IndexListExpr); ok {
		base = ix.X
	}
	if id, ok := base.(*ast.Ident); !ok || !id.IsExported() {
		return // a method of an unexported type is not API
	}
	d.add("method (" + d.expr(recv) + ") " + f.Name.Name + sig)
}

func (d *dumper) typ(t *ast.TypeSpec) {
	if !t.Name.IsExported() {
		return
	}
	name := t.Name.Name
	if t.TypeParams != nil {
		var ps []string
		for _, f := range t.TypeParams.List {
			var names []string
			for _, n := range f.Names {
				names = append(names, n.Name)
			}
			ps = append(ps, strings.Join(names, ", ")+" "+d.expr(f.Type))
		}
		name += "[" + strings.Join(ps, ", ") + "]"
	}
	switch u := t.Type.(type) {
	case *ast.StructType:
		d.add("type " + name + " struct")
		for _, fl := range u.Fields.List {
			if len(fl.Names) == 0 { // embedded
				if exportedEmbed(fl.Type) {
					d.add("type " + name + " struct, embedded " + d.expr(fl.Type))
				}
				continue
			}
			for _, n := range fl.Names {
				if n.IsExported() {
					d.add("type " + name + " struct, " + n.Name + " " + d.expr(fl.Type))
				}
			}
		}
	case *ast.InterfaceType:
		d.add("type " + name + " interface")
		for _, m := range u.Methods.List {
			if len(m.Names) == 0 {
				d.add("type " + name + " interface, embedded " + d.expr(m.Type))
				continue
			}
			for _, n := range m.Names {
				if n.IsExported() {
					d.add("type " + name + " interface, " + n.Name + strings.TrimPrefix(d.expr(m.Type), "func"))
				}
			}
		}
	default:
		if t.Assign.IsValid() {
			d.add("type " + name + " = " + d.expr(t.Type))
		} else {
			d.add("type " + name + " " + d.expr(t.Type))
		}
	}
}

// unnamed drops parameter names from a function type, as Go's own api
// files do: renaming a parameter does not change the API.
func unnamed(e ast.Expr) ast.Expr {
	ft, ok := e.(*ast.FuncType)
	if !ok {
		return e
	}
	strip := func(fl *ast.FieldList) *ast.FieldList {
		if fl == nil {
			return nil
		}
		out := &ast.FieldList{}
		for _, f := range fl.List {
			n := max(len(f.Names), 1)
			for range n {
				out.List = append(out.List, &ast.Field{Type: unnamed(f.Type)})
			}
		}
		return out
	}
	return &ast.FuncType{TypeParams: ft.TypeParams, Params: strip(ft.Params), Results: strip(ft.Results)}
}

func exportedEmbed(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.StarExpr:
		return exportedEmbed(e.X)
	case *ast.SelectorExpr:
		return e.Sel.IsExported()
	case *ast.Ident:
		return e.IsExported()
	}
	return false
}

// PkgCount is how much API one package exports.
type PkgCount struct {
	Pkg     string
	Idents  int // types, funcs, methods, consts, vars
	Members int // struct fields and interface methods
}

// Count tallies Dump's lines per package, as the API budget counts them.
func Count(lines []string) []PkgCount {
	m := map[string]*PkgCount{}
	var order []string
	for _, l := range lines {
		pkg, rest, ok := strings.Cut(strings.TrimPrefix(l, "pkg "), ", ")
		if !ok {
			continue
		}
		c := m[pkg]
		if c == nil {
			c = &PkgCount{Pkg: pkg}
			m[pkg] = c
			order = append(order, pkg)
		}
		if strings.HasPrefix(rest, "type ") && (strings.Contains(rest, " struct, ") || strings.Contains(rest, " interface, ")) {
			c.Members++
		} else {
			c.Idents++
		}
	}
	slices.Sort(order)
	total := PkgCount{Pkg: "total"}
	var out []PkgCount
	for _, p := range order {
		out = append(out, *m[p])
		total.Idents += m[p].Idents
		total.Members += m[p].Members
	}
	return append(out, total)
}
