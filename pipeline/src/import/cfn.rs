//! CloudFormation: parameters, pseudo parameters, conditions, mappings and the intrinsic
//! functions, resolved as far as a template allows without AWS. What only AWS knows (a
//! resource's attributes, another stack's exports, the region when not given) becomes
//! [`Val::Unknown`], which says why; the converter reports it where the value is used.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;

use super::load::{Raw, RawEntry, RawVal};
use super::{Loc, Notes};

/// A resolved node and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub loc: Loc,
    pub val: Val,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// A value only AWS knows, or that the template gets wrong.
    Unknown(Unknown),
}

/// Why a value cannot be known offline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unknown {
    /// The expression, e.g. `!GetAtt PipelineRole.Arn`.
    pub what: String,
    /// Why, and what to pass to resolve it.
    pub why: String,
    /// The logical id of the template resource it names, if it names one.
    pub resource: Option<String>,
}

impl Unknown {
    fn new(what: impl Into<String>, why: impl Into<String>) -> Unknown {
        Unknown {
            what: what.into(),
            why: why.into(),
            resource: None,
        }
    }

    /// `what: why`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.what, self.why)
    }
}

impl Node {
    /// A string, number or boolean as text.
    pub fn text(&self) -> Option<String> {
        match &self.val {
            Val::Str(s) | Val::Num(s) => Some(s.clone()),
            Val::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.val {
            Val::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }
}

/// Pseudo parameters with a value that does not depend on the account or region (the
/// standard `aws` partition). The others need `--param`.
const PSEUDO_DEFAULTS: &[(&str, &str)] = &[
    ("AWS::Partition", "aws"),
    ("AWS::URLSuffix", "amazonaws.com"),
];
/// Pseudo parameters that AWS sets when it deploys a stack.
pub(crate) const PSEUDO: &[&str] = &[
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
];

/// Resource types whose `Ref` is a name the template may set, and the property holding it.
const REF_NAMES: &[(&str, &str)] = &[
    ("AWS::CodeBuild::Project", "Name"),
    ("AWS::CodePipeline::Pipeline", "Name"),
    ("AWS::IAM::Role", "RoleName"),
    ("AWS::Lambda::Function", "FunctionName"),
    ("AWS::S3::Bucket", "BucketName"),
];
/// `Fn::GetAtt` attributes that repeat a property: (type, attribute, property).
const ATT_NAMES: &[(&str, &str, &str)] = &[
    ("AWS::CodeCommit::Repository", "Name", "RepositoryName"),
    ("AWS::CodeBuild::Project", "Name", "Name"),
];

/// A parameter's value after `--param` and `Default`.
enum Param {
    Text(String),
    List(Vec<String>),
    Missing(String),
}

enum CondState {
    Busy,
    Done(Result<bool, Unknown>),
}

/// One document, ready to resolve. For CodePipeline JSON (`cfn` false) nothing is an
/// intrinsic function: maps and strings are taken as written.
pub(crate) struct Template<'t> {
    cfn: bool,
    root: &'t Raw,
    params: BTreeMap<String, Param>,
    pseudo: BTreeMap<String, String>,
    imports: &'t BTreeMap<String, String>,
    conditions: HashMap<String, &'t RawEntry>,
    cond_state: HashMap<String, CondState>,
    depth: usize,
    /// `--map import:` names used.
    pub used_imports: HashSet<String>,
}

const MAX_DEPTH: usize = 64;

impl<'t> Template<'t> {
    /// A document without intrinsic functions.
    pub fn plain(root: &'t Raw, imports: &'t BTreeMap<String, String>) -> Template<'t> {
        Template {
            cfn: false,
            root,
            params: BTreeMap::new(),
            pseudo: BTreeMap::new(),
            imports,
            conditions: HashMap::new(),
            cond_state: HashMap::new(),
            depth: 0,
            used_imports: HashSet::new(),
        }
    }

    /// A CloudFormation template with the `--param` values `given` (parameters and pseudo
    /// parameters) and the `--map import:` values `imports`. Problems with the values
    /// given go to `notes`.
    pub fn cloudformation(
        root: &'t Raw,
        given: &BTreeMap<String, String>,
        imports: &'t BTreeMap<String, String>,
        notes: &mut Notes,
    ) -> Template<'t> {
        let mut template = Template::plain(root, imports);
        template.cfn = true;
        let root_loc = Loc::root();
        let declared = root.get("Parameters");
        let declared_entries = declared.and_then(|d| d.value.entries()).unwrap_or(&[]);
        for entry in declared_entries {
            let loc = root_loc
                .key("Parameters", declared.map(|d| d.line))
                .key(&entry.key, Some(entry.line));
            let param = parameter(entry, given.get(&entry.key), &loc, notes);
            template.params.insert(entry.key.clone(), param);
        }
        for (name, value) in given {
            if PSEUDO.contains(&name.as_str()) {
                template.pseudo.insert(name.clone(), value.clone());
            } else if !template.params.contains_key(name) {
                let names: Vec<&str> = template.params.keys().map(String::as_str).collect();
                let known = if names.is_empty() {
                    "the template declares no parameters".to_owned()
                } else {
                    format!("its parameters are: {}", names.join(", "))
                };
                notes.error(
                    &root_loc,
                    format!(
                        "--param {name}: the template has no parameter {name:?} ({known}; pseudo parameters: {})",
                        PSEUDO.join(", ")
                    ),
                );
            }
        }
        if let Some(conditions) = root.get("Conditions").and_then(|c| c.value.entries()) {
            for entry in conditions {
                template.conditions.insert(entry.key.clone(), entry);
            }
        }
        template
    }

    /// The resources of the template: (logical id, entry).
    pub fn resources(&self) -> Vec<&'t RawEntry> {
        self.root
            .get("Resources")
            .and_then(|r| r.value.entries())
            .map(|entries| entries.iter().collect())
            .unwrap_or_default()
    }

    fn resource(&self, id: &str) -> Option<&'t RawEntry> {
        self.resources().into_iter().find(|e| e.key == id)
    }

    /// Resolves `raw`, found at `loc`. `None` is `AWS::NoValue`: the property or list
    /// item is left out.
    pub fn resolve(&mut self, raw: &Raw, loc: Loc) -> Option<Node> {
        if self.depth > MAX_DEPTH {
            let why = "nested too deeply (a reference cycle?)";
            return Some(unknown(loc, Unknown::new("this value", why)));
        }
        self.depth += 1;
        let node = self.resolve_inner(raw, loc);
        self.depth -= 1;
        node
    }

    fn resolve_inner(&mut self, raw: &Raw, loc: Loc) -> Option<Node> {
        let val = match &raw.val {
            RawVal::Null => Val::Null,
            RawVal::Bool(b) => Val::Bool(*b),
            RawVal::Num(n) => Val::Num(n.clone()),
            RawVal::Str(s) if self.cfn && s.contains("{{resolve:") => {
                let service = s
                    .split("{{resolve:")
                    .nth(1)
                    .and_then(|rest| rest.split(':').next())
                    .unwrap_or("");
                Val::Unknown(Unknown::new(
                    format!("the dynamic reference {{{{resolve:{service}:…}}}}"),
                    "CloudFormation reads it from SSM Parameter Store or Secrets Manager when it deploys the stack",
                ))
            }
            RawVal::Str(s) => Val::Str(s.clone()),
            RawVal::Seq(items) => {
                let items = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.resolve(item, loc.index(i, Some(item.line))))
                    .collect();
                Val::List(items)
            }
            RawVal::Map(entries) => {
                if self.cfn
                    && let [entry] = entries.as_slice()
                    && is_intrinsic(&entry.key)
                {
                    return self.intrinsic(entry, loc);
                }
                let entries = entries
                    .iter()
                    .filter_map(|e| {
                        let node = self.resolve(&e.value, loc.key(&e.key, Some(e.line)))?;
                        Some((e.key.clone(), node))
                    })
                    .collect();
                Val::Map(entries)
            }
        };
        Some(Node { loc, val })
    }

    fn intrinsic(&mut self, entry: &RawEntry, loc: Loc) -> Option<Node> {
        let arg = &entry.value;
        let arg_loc = loc.key(&entry.key, Some(entry.line));
        let name = entry.key.as_str();
        let result: Result<Node, Unknown> = match name {
            "Ref" => match arg.as_str() {
                Some(target) => return self.reference(target, loc),
                None => Err(Unknown::new(
                    "!Ref",
                    "expects the name of a parameter or resource",
                )),
            },
            "Fn::If" => return self.fn_if(arg, loc, arg_loc),
            "Fn::GetAtt" => self.get_att(arg, &arg_loc).map(|s| text_node(&loc, s)),
            "Fn::Sub" => self.sub(arg, &arg_loc).map(|s| text_node(&loc, s)),
            "Fn::Join" => self.join(arg, &arg_loc).map(|s| text_node(&loc, s)),
            "Fn::Select" => self.select(arg, &arg_loc),
            "Fn::Split" => self.split(arg, &arg_loc, &loc),
            "Fn::FindInMap" => self.find_in_map(arg, &arg_loc, &loc),
            "Fn::ImportValue" => self.import_value(arg, &arg_loc).map(|s| text_node(&loc, s)),
            "Fn::Base64" => self
                .text_arg(arg, &arg_loc, "!Base64")
                .map(|s| text_node(&loc, base64::engine::general_purpose::STANDARD.encode(s))),
            "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" | "Condition" => {
                let one = Raw {
                    line: arg.line,
                    val: RawVal::Map(vec![entry.clone()]),
                };
                self.condition_expr(&one, &loc).map(|b| Node {
                    loc: loc.clone(),
                    val: Val::Bool(b),
                })
            }
            "Fn::GetAZs" => Err(Unknown::new(
                "!GetAZs",
                "the availability zones of a region are known only to AWS",
            )),
            other => Err(Unknown::new(
                format!("!{}", short(other)),
                "this function is not supported by the importer",
            )),
        };
        Some(match result {
            Ok(node) => node,
            Err(why) => unknown(loc, why),
        })
    }

    /// `Ref`: a parameter, a pseudo parameter or a resource.
    fn reference(&mut self, target: &str, loc: Loc) -> Option<Node> {
        let what = format!("!Ref {target}");
        let result = if target == "AWS::NoValue" {
            return None;
        } else if PSEUDO.contains(&target) {
            let default = PSEUDO_DEFAULTS.iter().find(|(n, _)| *n == target);
            match (self.pseudo.get(target), default) {
                (Some(value), _) => Ok(text_node(&loc, value.clone())),
                (None, Some((_, value))) => Ok(text_node(&loc, (*value).to_owned())),
                (None, None) => Err(Unknown::new(
                    what,
                    format!(
                        "AWS sets {target} when it deploys the stack; pass --param {target}=VALUE"
                    ),
                )),
            }
        } else if let Some(param) = self.params.get(target) {
            match param {
                Param::Text(value) => Ok(text_node(&loc, value.clone())),
                Param::List(items) => Ok(Node {
                    val: Val::List(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, s)| text_node(&loc.index(i, loc.line), s.clone()))
                            .collect(),
                    ),
                    loc: loc.clone(),
                }),
                Param::Missing(why) => Err(Unknown::new(what, why.clone())),
            }
        } else if let Some(resource) = self.resource(target) {
            let kind = resource_type(resource);
            let property = REF_NAMES.iter().find(|(t, _)| *t == kind).map(|(_, p)| *p);
            match property.and_then(|p| self.resource_property(resource, p)) {
                Some(Ok(name)) => Ok(text_node(&loc, name)),
                found => Err(Unknown {
                    what,
                    why: not_named(target, kind, property, found),
                    resource: Some(target.to_owned()),
                }),
            }
        } else {
            Err(Unknown::new(
                what,
                format!(
                    "there is no parameter, pseudo parameter or resource {target:?} in the template"
                ),
            ))
        };
        Some(match result {
            Ok(node) => node,
            Err(why) => unknown(loc, why),
        })
    }

    /// A resource's property, resolved to text: `None` if it is not set.
    fn resource_property(
        &mut self,
        resource: &RawEntry,
        property: &str,
    ) -> Option<Result<String, Unknown>> {
        let properties = resource.value.get("Properties")?;
        let raw = &properties.value.get(property)?.value;
        let loc = Loc::root()
            .key("Resources", None)
            .key(&resource.key, Some(resource.line))
            .key("Properties", Some(properties.line))
            .key(property, Some(raw.line));
        let node = self.resolve(raw, loc)?;
        Some(scalar(&node))
    }

    /// `Fn::GetAtt`: known only for the few attributes that repeat a property the
    /// template sets (a CodeCommit repository's `Name`); otherwise only AWS knows it.
    fn get_att(&mut self, arg: &Raw, loc: &Loc) -> Result<String, Unknown> {
        let (resource, attribute) = match &arg.val {
            RawVal::Str(s) => match s.split_once('.') {
                Some((r, a)) => (r.to_owned(), Some(a.to_owned())),
                None => (s.clone(), None),
            },
            RawVal::Seq(items) if items.len() == 2 => {
                let resource = items[0].as_str().unwrap_or_default().to_owned();
                let attribute = self
                    .resolve(&items[1], loc.index(1, Some(items[1].line)))
                    .and_then(|n| n.text());
                (resource, attribute)
            }
            _ => (String::new(), None),
        };
        let Some(attribute) = attribute else {
            return Err(Unknown::new(
                "!GetAtt",
                "expects RESOURCE.ATTRIBUTE or [RESOURCE, ATTRIBUTE]",
            ));
        };
        let what = format!("!GetAtt {resource}.{attribute}");
        let Some(entry) = self.resource(&resource) else {
            return Err(Unknown::new(
                what,
                format!("there is no resource {resource:?} in the template"),
            ));
        };
        let kind = resource_type(entry);
        let property = ATT_NAMES
            .iter()
            .find(|(t, a, _)| *t == kind && *a == attribute)
            .map(|(_, _, p)| *p);
        let why = match property {
            None => format!(
                "{resource}.{attribute} is an attribute of a resource, known only once AWS creates it"
            ),
            Some(p) => match self.resource_property(entry, p) {
                Some(Ok(name)) => return Ok(name),
                found => not_named(&resource, kind, property, found),
            },
        };
        Err(Unknown {
            what,
            why,
            resource: Some(resource),
        })
    }

    fn fn_if(&mut self, arg: &Raw, loc: Loc, arg_loc: Loc) -> Option<Node> {
        let RawVal::Seq(items) = &arg.val else {
            let why = Unknown::new("!If", "expects [CONDITION, VALUE_IF_TRUE, VALUE_IF_FALSE]");
            return Some(unknown(loc, why));
        };
        let (Some(condition), 3) = (items.first().and_then(Raw::as_str), items.len()) else {
            let why = Unknown::new("!If", "expects [CONDITION, VALUE_IF_TRUE, VALUE_IF_FALSE]");
            return Some(unknown(loc, why));
        };
        match self.condition(condition) {
            Ok(choice) => {
                let i = if choice { 1 } else { 2 };
                self.resolve(&items[i], arg_loc.index(i, Some(items[i].line)))
            }
            Err(why) => {
                let what = format!("!If [{condition}, …]");
                let why = format!("the condition cannot be evaluated: {}", why.describe());
                Some(unknown(loc, Unknown::new(what, why)))
            }
        }
    }

    /// Evaluates the named condition of the `Conditions` section.
    pub fn condition(&mut self, name: &str) -> Result<bool, Unknown> {
        match self.cond_state.get(name) {
            Some(CondState::Done(result)) => return result.clone(),
            Some(CondState::Busy) => {
                return Err(Unknown::new(
                    format!("condition {name}"),
                    "it refers to itself (a condition cycle)",
                ));
            }
            None => {}
        }
        let Some(entry) = self.conditions.get(name).copied() else {
            return Err(Unknown::new(
                format!("condition {name}"),
                "the template's Conditions section has no such condition",
            ));
        };
        self.cond_state.insert(name.to_owned(), CondState::Busy);
        let loc = Loc::root()
            .key("Conditions", None)
            .key(name, Some(entry.line));
        let result = self.condition_expr(&entry.value, &loc);
        self.cond_state
            .insert(name.to_owned(), CondState::Done(result.clone()));
        result
    }

    fn condition_expr(&mut self, raw: &Raw, loc: &Loc) -> Result<bool, Unknown> {
        let bad = || {
            Unknown::new(
                "a condition",
                "expected !Equals, !Not, !And, !Or or !Condition",
            )
        };
        let entry = match raw.entries() {
            Some([entry]) => entry,
            _ => {
                let node = self.resolve(raw, loc.clone()).ok_or_else(bad)?;
                return match node.val {
                    Val::Bool(b) => Ok(b),
                    Val::Str(s) if s == "true" || s == "false" => Ok(s == "true"),
                    Val::Unknown(why) => Err(why),
                    _ => Err(bad()),
                };
            }
        };
        let arg_loc = loc.key(&entry.key, Some(entry.line));
        let items: &[Raw] = match &entry.value.val {
            RawVal::Seq(items) => items,
            _ => &[],
        };
        match entry.key.as_str() {
            "Condition" => match entry.value.as_str() {
                Some(name) => self.condition(name),
                None => Err(Unknown::new("!Condition", "expects a condition name")),
            },
            "Fn::Equals" => {
                let [a, b] = items else {
                    return Err(Unknown::new("!Equals", "expects [VALUE, VALUE]"));
                };
                let a = self.equals_arg(a, arg_loc.index(0, Some(a.line)))?;
                let b = self.equals_arg(b, arg_loc.index(1, Some(b.line)))?;
                Ok(a == b)
            }
            "Fn::Not" => {
                let [c] = items else {
                    return Err(Unknown::new("!Not", "expects [CONDITION]"));
                };
                Ok(!self.condition_expr(c, &arg_loc.index(0, Some(c.line)))?)
            }
            "Fn::And" | "Fn::Or" => {
                let and = entry.key == "Fn::And";
                if items.len() < 2 {
                    let what = if and { "!And" } else { "!Or" };
                    return Err(Unknown::new(what, "expects a list of 2 to 10 conditions"));
                }
                let mut first_unknown = None;
                for (i, c) in items.iter().enumerate() {
                    match self.condition_expr(c, &arg_loc.index(i, Some(c.line))) {
                        // false decides an And, true an Or, whatever the others are.
                        Ok(b) if b != and => return Ok(b),
                        Ok(_) => {}
                        Err(why) => {
                            first_unknown.get_or_insert(why);
                        }
                    }
                }
                match first_unknown {
                    Some(why) => Err(why),
                    None => Ok(and),
                }
            }
            _ => {
                let node = self.resolve(raw, loc.clone()).ok_or_else(bad)?;
                match node.val {
                    Val::Bool(b) => Ok(b),
                    Val::Unknown(why) => Err(why),
                    _ => Err(bad()),
                }
            }
        }
    }

    fn equals_arg(&mut self, raw: &Raw, loc: Loc) -> Result<String, Unknown> {
        match self.resolve(raw, loc) {
            None => Ok(String::new()),
            Some(node) => scalar(&node),
        }
    }

    fn text_arg(&mut self, raw: &Raw, loc: &Loc, what: &str) -> Result<String, Unknown> {
        match self.resolve(raw, loc.clone()) {
            Some(node) => scalar(&node),
            None => Err(Unknown::new(what, "expects a value, found AWS::NoValue")),
        }
    }

    fn sub(&mut self, arg: &Raw, loc: &Loc) -> Result<String, Unknown> {
        let bad = || Unknown::new("!Sub", "expects TEMPLATE or [TEMPLATE, {NAME: VALUE}]");
        let (template, vars) = match &arg.val {
            RawVal::Str(s) => (s.as_str(), None),
            RawVal::Seq(items) => match items.as_slice() {
                [t, vars] => (
                    t.as_str().ok_or_else(bad)?,
                    Some((vars, loc.index(1, Some(vars.line)))),
                ),
                [t] => (t.as_str().ok_or_else(bad)?, None),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        let mut values: HashMap<String, Result<String, Unknown>> = HashMap::new();
        if let Some((vars, vars_loc)) = vars {
            for entry in vars.entries().ok_or_else(bad)? {
                let value = self.text_arg(
                    &entry.value,
                    &vars_loc.key(&entry.key, Some(entry.line)),
                    &format!("${{{}}} in !Sub", entry.key),
                );
                values.insert(entry.key.clone(), value);
            }
        }
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            rest = &after[end + 1..];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
                continue;
            }
            let name = name.trim();
            let value = match values.get(name) {
                Some(value) => value.clone(),
                None if name.contains('.') && !name.starts_with("AWS::") => {
                    let raw = Raw {
                        line: arg.line,
                        val: RawVal::Str(name.to_owned()),
                    };
                    self.get_att(&raw, loc)
                }
                None => match self.reference(name, loc.clone()) {
                    Some(node) => scalar(&node),
                    None => Ok(String::new()),
                },
            };
            match value {
                Ok(text) => out.push_str(&text),
                Err(inner) => {
                    return Err(Unknown {
                        what: format!("${{{name}}} in !Sub"),
                        why: inner.describe(),
                        resource: inner.resource,
                    });
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn join(&mut self, arg: &Raw, loc: &Loc) -> Result<String, Unknown> {
        let bad = || Unknown::new("!Join", "expects [DELIMITER, [VALUES]]");
        let RawVal::Seq(items) = &arg.val else {
            return Err(bad());
        };
        let [delimiter, list] = items.as_slice() else {
            return Err(bad());
        };
        let delimiter = self.text_arg(delimiter, &loc.index(0, Some(delimiter.line)), "!Join")?;
        let list = self.list_arg(list, loc.index(1, Some(list.line)), "!Join")?;
        let texts: Result<Vec<String>, Unknown> = list.iter().map(scalar).collect();
        Ok(texts?.join(&delimiter))
    }

    fn list_arg(&mut self, raw: &Raw, loc: Loc, what: &str) -> Result<Vec<Node>, Unknown> {
        match self.resolve(raw, loc) {
            Some(Node {
                val: Val::List(items),
                ..
            }) => Ok(items),
            Some(Node {
                val: Val::Unknown(why),
                ..
            }) => Err(why),
            _ => Err(Unknown::new(what, "expects a list")),
        }
    }

    fn select(&mut self, arg: &Raw, loc: &Loc) -> Result<Node, Unknown> {
        let bad = || Unknown::new("!Select", "expects [INDEX, [VALUES]]");
        let RawVal::Seq(items) = &arg.val else {
            return Err(bad());
        };
        let [index, list] = items.as_slice() else {
            return Err(bad());
        };
        let index = self.text_arg(index, &loc.index(0, Some(index.line)), "!Select")?;
        let index: usize = index.trim().parse().map_err(|_| {
            Unknown::new(
                "!Select",
                format!("the index {index:?} is not a whole number"),
            )
        })?;
        let list = self.list_arg(list, loc.index(1, Some(list.line)), "!Select")?;
        let count = list.len();
        list.into_iter().nth(index).ok_or_else(|| {
            Unknown::new(
                format!("!Select [{index}, …]"),
                format!("the list has {count} items"),
            )
        })
    }

    fn split(&mut self, arg: &Raw, arg_loc: &Loc, loc: &Loc) -> Result<Node, Unknown> {
        let bad = || Unknown::new("!Split", "expects [DELIMITER, TEXT]");
        let RawVal::Seq(items) = &arg.val else {
            return Err(bad());
        };
        let [delimiter, text] = items.as_slice() else {
            return Err(bad());
        };
        let delimiter =
            self.text_arg(delimiter, &arg_loc.index(0, Some(delimiter.line)), "!Split")?;
        let text = self.text_arg(text, &arg_loc.index(1, Some(text.line)), "!Split")?;
        if delimiter.is_empty() {
            return Err(Unknown::new("!Split", "the delimiter is empty"));
        }
        let items = text
            .split(delimiter.as_str())
            .enumerate()
            .map(|(i, part)| text_node(&loc.index(i, loc.line), part.to_owned()))
            .collect();
        Ok(Node {
            loc: loc.clone(),
            val: Val::List(items),
        })
    }

    fn find_in_map(&mut self, arg: &Raw, arg_loc: &Loc, loc: &Loc) -> Result<Node, Unknown> {
        let bad = || Unknown::new("!FindInMap", "expects [MAP, TOP_KEY, SECOND_KEY]");
        let RawVal::Seq(items) = &arg.val else {
            return Err(bad());
        };
        if !(3..=4).contains(&items.len()) {
            return Err(bad());
        }
        let mut keys = Vec::new();
        for (i, item) in items.iter().take(3).enumerate() {
            keys.push(self.text_arg(item, &arg_loc.index(i, Some(item.line)), "!FindInMap")?);
        }
        let what = format!("!FindInMap [{}]", keys.join(", "));
        let found = self
            .root
            .get("Mappings")
            .and_then(|m| m.value.get(&keys[0]))
            .and_then(|m| m.value.get(&keys[1]))
            .and_then(|m| m.value.get(&keys[2]));
        // Language extensions: [MAP, TOP, SECOND, {DefaultValue: X}].
        let default = items.get(3).and_then(|d| d.get("DefaultValue"));
        let raw = match (found, default) {
            (Some(entry), _) | (None, Some(entry)) => entry.value.clone(),
            (None, None) => {
                let why = format!(
                    "the template's Mappings have no {}.{}.{}",
                    keys[0], keys[1], keys[2]
                );
                return Err(Unknown::new(what, why));
            }
        };
        self.resolve(&raw, loc.clone())
            .ok_or_else(|| Unknown::new(what, "the mapping's value is AWS::NoValue"))
    }

    fn import_value(&mut self, arg: &Raw, loc: &Loc) -> Result<String, Unknown> {
        let name = self.text_arg(arg, loc, "!ImportValue")?;
        match self.imports.get(&name) {
            Some(value) => {
                self.used_imports.insert(name);
                Ok(value.clone())
            }
            None => Err(Unknown::new(
                format!("!ImportValue {name}"),
                format!(
                    "it is another stack's export, known only to AWS; pass --map import:{name}=VALUE"
                ),
            )),
        }
    }
}

/// `Text` from `--param` or `Default`, a list for list types, or why there is no value.
fn parameter(entry: &RawEntry, given: Option<&String>, loc: &Loc, notes: &mut Notes) -> Param {
    let name = &entry.key;
    let field = |key: &str| entry.value.get(key).map(|e| &e.value);
    let kind = field("Type").and_then(Raw::as_str).unwrap_or("String");
    let default = field("Default").and_then(|d| match &d.val {
        RawVal::Str(s) | RawVal::Num(s) => Some(s.clone()),
        RawVal::Bool(b) => Some(b.to_string()),
        _ => None,
    });
    if let (Some(value), Some(RawVal::Seq(allowed))) =
        (given, field("AllowedValues").map(|a| &a.val))
    {
        let allowed: Vec<String> = allowed
            .iter()
            .filter_map(|a| match &a.val {
                RawVal::Str(s) | RawVal::Num(s) => Some(s.clone()),
                RawVal::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect();
        if !allowed.contains(value) {
            notes.error(
                loc,
                format!(
                    "--param {name}: the value is not one of the parameter's AllowedValues: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
    let value = match (given, default) {
        (Some(value), _) => value.clone(),
        (None, _) if kind.starts_with("AWS::SSM::Parameter::Value<") => {
            return Param::Missing(format!(
                "parameter {name} ({kind}) is read from SSM Parameter Store when AWS deploys the stack; pass --param {name}=VALUE"
            ));
        }
        (None, Some(default)) => default,
        (None, None) => {
            return Param::Missing(format!(
                "parameter {name} has no Default; pass --param {name}=VALUE"
            ));
        }
    };
    if kind == "CommaDelimitedList" || kind.starts_with("List<") {
        Param::List(value.split(',').map(str::to_owned).collect())
    } else {
        Param::Text(value)
    }
}

fn resource_type(resource: &RawEntry) -> &str {
    resource
        .value
        .get("Type")
        .and_then(|t| t.value.as_str())
        .unwrap_or("")
}

/// Why a resource's name is not known.
fn not_named(
    id: &str,
    kind: &str,
    property: Option<&str>,
    found: Option<Result<String, Unknown>>,
) -> String {
    match (property, found) {
        (Some(_), Some(Err(inner))) => {
            format!("the name of resource {id} ({kind}) is {}", inner.describe())
        }
        (Some(property), _) => format!(
            "resource {id} ({kind}) sets no {property}, so AWS generates its name when it creates it"
        ),
        (None, _) => format!("resource {id} ({kind}) gets its id from AWS when AWS creates it"),
    }
}

fn is_intrinsic(key: &str) -> bool {
    key == "Ref" || key.starts_with("Fn::")
}

/// `Fn::Join` → `Join`, for messages written with the short forms.
fn short(name: &str) -> &str {
    name.strip_prefix("Fn::").unwrap_or(name)
}

fn text_node(loc: &Loc, text: String) -> Node {
    Node {
        loc: loc.clone(),
        val: Val::Str(text),
    }
}

fn unknown(loc: Loc, why: Unknown) -> Node {
    Node {
        loc,
        val: Val::Unknown(why),
    }
}

/// A scalar's text, or why there is none.
pub(crate) fn scalar(node: &Node) -> Result<String, Unknown> {
    match &node.val {
        Val::Unknown(why) => Err(why.clone()),
        _ => node.text().ok_or_else(|| {
            Unknown::new(
                "this value",
                "expected a single value, found a list or mapping",
            )
        }),
    }
}
