namespace CtsLite.Can

/// Parsing DBC files: the statements of a file, by keyword, into a `Database`.
[<RequireQualifiedAccess>]
module Dbc =

    /// Parses `path` (following `CM_ "IMPORT x.dbc";` relative to it) with `readFile`. Every
    /// problem is reported; a database is returned only when there are none.
    val parseWith: readFile: (string -> Result<string, string>) -> path: string -> Result<Database, DbcError list>

    /// Reads a file for `parseWith`.
    val readFile: path: string -> Result<string, string>

    /// Parses a DBC file from disk.
    val loadFile: path: string -> Result<Database, DbcError list>

    /// Parses DBC text held in memory (imports are not available).
    val parseText: name: string -> text: string -> Result<Database, DbcError list>

    /// The names of the DBC files built into CtsLite (opendbc's, MIT), usable wherever a DBC
    /// file is asked for.
    val builtInNames: string list

    /// The text of the built-in DBC of that name.
    val tryBuiltInText: name: string -> string option

    /// A built-in DBC by name, else the file at that path.
    val load: nameOrPath: string -> Result<Database, DbcError list>

    /// The text of the DBC file at `path` with every file it imports written in place of its
    /// `IMPORT` statement: one file that reads as the file with its imports does (checked), for
    /// a reader that has not got the imported files, such as a service the DBC is sent to.
    val inlineImports: path: string -> Result<string, DbcError list>
